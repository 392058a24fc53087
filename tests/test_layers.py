"""The import rule, checked: data flows one way, and each layer imports only those below it.

``MAY_IMPORT`` is the rule; docs/development.md's diagram ("The import rule") draws the arrows the code really
has, and a test holds the two together. The modules directly in mlp_cli/ (config.py,
config_file.py, atomic.py, version.py, stop_signals.py: "root" here, "top" in docs/development.md) read the
optimiser and schedule registries of nn/ and the dataset registry, a leaf module of data/. nn/
needs numpy and the error classes only; data/ and nn/ never import training/, reports/ or cli/;
only cli/ imports typer or rich. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlp_cli"
README = PACKAGE.parent / "docs" / "development.md"  # the page with the diagram
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
# the `fast` extra, imported lazily (through nn.fused.kernels()), numpy without it
OPTIONAL = {"mlp_cli.nn.compiled": {"numba"}, "mlp_cli.nn.compiled_random": {"numba"}}
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
            if name == "mlp_cli":
                continue
            if own == "root" and name in ("mlp_cli.data.registry", "mlp_cli.training.loggers.registry"):
                continue  # the config's dataset and logger names
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


# The README's names for the layers (the three registries: leaves their layer's rule lets top read).
README_LAYERS = {"cli/": "cli", "api.py": "api", "reports/": "reports", "sweeps/": "sweeps", "training/": "training",
                 "data/": "data", "top": "root", "nn/": "nn", "data/registry.py": "data", "nn/registry.py": "nn",
                 "training/loggers/registry.py": "training"}


def real_arrows() -> set[tuple[str, str]]:
    """(layer, layer it imports) for every import between two layers, errors.py aside."""
    arrows = set()
    for path in MODULES:
        own = layer_of(module_name(path))
        arrows |= {(own, layer_of(name)) for name in imports(path) if name.startswith("mlp_cli")}
    return {(a, b) for a, b in arrows if a != b and b != "errors"}


def drawn_arrows(readme: str) -> set[tuple[str, str]]:
    """The arrows of docs/development.md's diagram: the ``text`` block whose lines read ``layer -> ...``."""
    blocks = [b for b in re.findall(r"```text\n(.*?)```", readme, re.S) if "->" in b]
    assert len(blocks) == 1, "docs/development.md has one diagram of the layers"
    arrows = set()
    for line in blocks[0].splitlines():
        source, _, targets = line.partition("->")
        for target in targets.split():
            if target in README_LAYERS:
                arrows.add((README_LAYERS[source.strip()], README_LAYERS[target]))
            else:
                assert target in ("numpy", "alone"), f"docs/development.md's diagram names {target!r}, not a layer"
    return arrows


def test_the_readme_draws_the_arrows_the_code_has() -> None:
    drawn, real = drawn_arrows(README.read_text()), real_arrows()
    assert drawn - real == set(), f"docs/development.md draws arrows the code does not have: {sorted(drawn - real)}"
    assert real - drawn == set(), f"the code has arrows docs/development.md does not draw: {sorted(real - drawn)}"
    registries = {("root", "data"), ("root", "training")}  # data/registry.py, training/loggers/registry.py
    allowed = {(a, b) for a, bs in MAY_IMPORT.items() for b in bs} | registries
    assert real <= allowed  # and each one the rule allows
