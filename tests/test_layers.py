"""The import rule, checked: data flows one way, and each layer imports only those below it.

    cli/  ->  api.py  ->  reports/  ->  sweeps/  ->  training/  ->  data/  ->  config.py, config_file.py,
                                                                            atomic.py  ->  nn/  ->  errors.py

(the config reads the optimiser and schedule registries of nn/, and the dataset registry, a
leaf module of data/). nn/ needs numpy and the error
classes only; data/ and nn/ never import training/, reports/ or
cli/; only cli/ imports typer or rich. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlp_cli"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# layer -> the tool's layers it may import (besides itself)
MAY_IMPORT = {
    "errors": set(),
    "root": {"root", "nn"},
    "nn": {"errors"},
    "data": {"root", "nn"},
    "training": {"root", "nn", "data"},
    "sweeps": {"root", "nn", "data", "training"},
    "reports": {"root", "nn", "data", "training", "sweeps"},
    "api": {"root", "nn", "data", "training", "sweeps", "reports"},
    "cli": {"root", "nn", "data", "training", "sweeps", "reports", "api"},
}
THIRD_PARTY = {"nn": {"numpy"}}  # layers limited to these outside packages
OPTIONAL = {"mlp_cli.nn.compiled": {"numba"}}  # the `fast` extra, imported lazily, numpy without it
UI_ONLY = {"typer", "rich", "click"}


def layer_of(module: str) -> str:
    if module in ("mlp_cli", "mlp_cli.__main__"):  # the package's face: its API, its command
        return "api" if module == "mlp_cli" else "cli"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("nn", "data", "training", "sweeps", "reports", "cli", "api"):
        return parts[1]
    if module == "mlp_cli.errors":
        return "errors"
    return "root"


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] if node.module != "mlp_cli" else [f"mlp_cli.{a.name}" for a in node.names]
    return found


def module_name(path: Path) -> str:
    return ".".join(("mlp_cli", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_each_module_imports_only_the_layers_below_it(path: Path) -> None:
    own = layer_of(module_name(path))
    allowed = MAY_IMPORT[own] | {own, "errors"}
    for name in imports(path):
        top = name.split(".")[0]
        if top == "mlp_cli":
            if name in ("mlp_cli", "mlp_cli.__version__"):
                continue
            if own == "root" and name == "mlp_cli.data.registry":  # the config's dataset names
                continue
            assert layer_of(name) in allowed or (own == "nn" and name.startswith("mlp_cli.nn")), (
                f"{module_name(path)} ({own}) imports {name} ({layer_of(name)})")
        elif top not in STDLIB:
            assert own == "cli" or top not in UI_ONLY, f"{module_name(path)} imports {top}: only cli/ may"
            if own in THIRD_PARTY and top not in OPTIONAL.get(module_name(path), ()):
                assert top in THIRD_PARTY[own], f"{module_name(path)} imports {top}; nn/ needs only numpy"


def test_the_rule_is_checked_for_real() -> None:
    """The check above sees imports inside functions, and would catch a layer going upwards."""
    assert "mlp_cli.data.cache" in imports(PACKAGE / "training" / "inputs.py")  # imported in a function
    assert layer_of("mlp_cli.cli.app") not in MAY_IMPORT["training"]
    assert layer_of("mlp_cli.training.loop") not in MAY_IMPORT["data"] | MAY_IMPORT["nn"]
