"""Options and helpers shared by several commands."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

import typer

from mlp_cli.nn.registry import listed
from mlp_cli.training.loggers.registry import LOGGERS

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Dataset cache directory (default: MLP_DATA_DIR or the user cache)."),
]
Mirror = Annotated[
    list[str] | None,
    typer.Option("--mirror", help="Extra dataset mirror URL (http(s):// or file://), tried first. Repeatable."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
LOG_PROBLEM_EXIT = 3  # trained and saved, but a logger could not record it all (README, Watch training)


def report_log_problems(problems: list[str]) -> None:
    """A logger's failure, one line each at the end; the run itself is complete (exit 3)."""
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    if problems:
        raise typer.Exit(LOG_PROBLEM_EXIT)


def complete_from(registry: Mapping[str, object]) -> Callable[[str], list[str]]:
    """Shell completion of an option whose values are a registry's names (read when the shell
    asks, so every entry is offered)."""

    def complete(incomplete: str) -> list[str]:
        return [name for name in registry if name.startswith(incomplete)]

    return complete


def one_of(registry: Mapping[str, object]) -> Callable[[str], str]:
    """An option's check that its value is one of a registry's names (click's usage error if not)."""

    def check(value: str) -> str:
        if value not in registry:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, registry))}.")
        return value

    return check


Log = Annotated[
    list[str] | None,
    typer.Option("--log", help=f"Also log the run to {listed(LOGGERS)} (run.log). Repeatable.",
                 autocompletion=complete_from(LOGGERS)),
]


def draw_curves(run_dir: Path, out: Path) -> None:
    """The learning curves of a run, as `mlp plot RUN` draws them (for loggers that keep a picture)."""
    from mlp_cli.reports.plot import RunCurves, plot_curves
    from mlp_cli.training.metrics import read_metrics

    plot_curves([RunCurves.from_rows(run_dir.name, read_metrics(run_dir))], out)
