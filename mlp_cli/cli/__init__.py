"""Command-line interface: one thin function per command, in a module of its own.

Imports, the one convention: ``mlp --help`` must stay instant, so a module that start-up does not
load already (numpy, rich, requests, the library's heavy layers) is imported inside the function
that needs it, and only such a module; what a signature names comes through an
``if TYPE_CHECKING:`` import at the top, so that mypy checks every call from here into the layers
below (``[[tool.mypy.overrides]]`` for ``mlp_cli.cli.*`` in pyproject.toml). No ``Any`` crosses
from here into the library but the values of a JSON-like ``dict[str, Any]``. Both rules are
checked by tests/test_cli_typing.py.
"""

from __future__ import annotations

from mlp_cli.cli import augment as _augment  # noqa: F401  (registers commands)
from mlp_cli.cli import download as _download  # noqa: F401
from mlp_cli.cli import evaluate as _evaluate  # noqa: F401
from mlp_cli.cli import export as _export  # noqa: F401
from mlp_cli.cli import gradcheck as _gradcheck  # noqa: F401
from mlp_cli.cli import info as _info  # noqa: F401
from mlp_cli.cli import log as _log  # noqa: F401
from mlp_cli.cli import plot as _plot  # noqa: F401
from mlp_cli.cli import predict as _predict  # noqa: F401
from mlp_cli.cli import runs as _runs  # noqa: F401
from mlp_cli.cli import sweep as _sweep  # noqa: F401
from mlp_cli.cli import train as _train  # noqa: F401
from mlp_cli.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="mlp")
