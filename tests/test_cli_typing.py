"""The command line's two rules for crossing into the library, checked.

1. Types cross from ``cli/`` into every layer below: no ``Any`` in an annotation of ``cli/``
   except as the values of a JSON-like ``dict[str, Any]`` (and in the click glue of ``app.py``,
   whose error and context classes typer keeps private), so mypy checks every call.
2. A function-local import in ``cli/`` is there for start-up time only: it brings in a module that
   ``mlp --help`` does not load (numpy, rich, requests, the library's heavy layers). Anything
   start-up loads anyway is imported at the top of the module; types come through
   ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[1] / "mlp_cli" / "cli"
MODULES = sorted(CLI.glob("*.py"))
CLICK_GLUE = {("app.py", name) for name in ("fail_usage", "_asks_for_json", "invoke", "make_context", "_attach_usage")}


def bare_any(annotation: ast.expr) -> list[int]:
    """Lines where ``Any`` appears other than as ``dict[str, Any]``."""
    allowed = {id(node.slice.elts[1]) for node in ast.walk(annotation)
               if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "dict"
               and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2}
    return [node.lineno for node in ast.walk(annotation)
            if isinstance(node, ast.Name) and node.id == "Any" and id(node) not in allowed]


def annotations(tree: ast.Module) -> list[tuple[str, ast.expr]]:
    found: list[tuple[str, ast.expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
            found += [(node.name, a.annotation) for a in every if a is not None and a.annotation is not None]
            found += [(node.name, node.returns)] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            found.append(("", node.annotation))
    return found


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_any_crosses_from_the_cli(path: Path) -> None:
    tree = ast.parse(path.read_text())
    wrong = [(function, line) for function, annotation in annotations(tree) for line in bare_any(annotation)
             if (path.name, function) not in CLICK_GLUE]
    assert not wrong, f"{path.name}: Any in annotations at {wrong}; name the type (TYPE_CHECKING import)"


@pytest.fixture(scope="module")
def loaded_at_start() -> set[str]:
    """The modules ``import mlp_cli.cli`` loads (what ``mlp --help`` pays for)."""
    code = "import sys, mlp_cli.cli; print('\\n'.join(sys.modules))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def local_imports(tree: ast.Module) -> list[tuple[int, list[str]]]:
    """(line, the modules it loads) of each import inside a function."""
    found = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    found.append((node.lineno, [alias.name for alias in node.names]))
                elif isinstance(node, ast.ImportFrom) and node.module:
                    submodules = [f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")]
                    found.append((node.lineno, [node.module, *submodules]))
    return found


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a name inside a module, not a module
        return False


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_a_function_local_import_is_there_for_start_up_time(path: Path, loaded_at_start: set[str]) -> None:
    needless = [(line, modules[-1]) for line, modules in local_imports(ast.parse(path.read_text()))
                if all(module in loaded_at_start for module in modules)]
    assert not needless, f"{path.name}: {needless} are loaded at start-up anyway; import them at the top"


def test_the_checks_see_what_they_must() -> None:
    assert bare_any(ast.parse("x: list[Any]", mode="exec").body[0].annotation) == [1]  # type: ignore[attr-defined]
    assert bare_any(ast.parse("x: dict[str, Any] | None", mode="exec").body[0].annotation) == []  # type: ignore[attr-defined]
    tree = ast.parse("def f():\n    from mlp_cli.errors import UsageError\n    import numpy\n")
    assert local_imports(tree) == [(2, ["mlp_cli.errors"]), (3, ["numpy"])]
    tree = ast.parse("def f():\n    from mlp_cli.cli import progress\n")
    assert local_imports(tree) == [(2, ["mlp_cli.cli", "mlp_cli.cli.progress"])]
