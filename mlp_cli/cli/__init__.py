"""Command-line interface: one thin function per command, in a module of its own."""

from __future__ import annotations

from mlp_cli.cli import augment as _augment  # noqa: F401  (registers commands)
from mlp_cli.cli import download as _download  # noqa: F401
from mlp_cli.cli import evaluate as _evaluate  # noqa: F401
from mlp_cli.cli import export as _export  # noqa: F401
from mlp_cli.cli import gradcheck as _gradcheck  # noqa: F401
from mlp_cli.cli import info as _info  # noqa: F401
from mlp_cli.cli import plot as _plot  # noqa: F401
from mlp_cli.cli import predict as _predict  # noqa: F401
from mlp_cli.cli import runs as _runs  # noqa: F401
from mlp_cli.cli import sweep as _sweep  # noqa: F401
from mlp_cli.cli import train as _train  # noqa: F401
from mlp_cli.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="mlp")
