"""Options and helpers shared by several commands."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

import typer

from mlp_cli.nn.registry import listed
from mlp_cli.training.loggers.registry import LOGGERS
from mlp_cli.words import did_you_mean

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


def complete_config(incomplete: str) -> list[str]:
    """Config names (configs/*.yaml here and in the checkout) for ``--config``."""
    from mlp_cli.config_file import config_names

    return [name for name in config_names() if name.startswith(incomplete)]


def complete_sweep(incomplete: str) -> list[str]:
    """Sweep names (configs/sweeps/*.yaml) for ``mlp sweep``'s argument."""
    from mlp_cli.config_file import config_names

    return [name for name in config_names("sweeps") if name.startswith(incomplete)]


def complete_set(incomplete: str) -> list[str]:
    """``--set``: the config's keys as ``section.key=`` (from the schema); once a key with
    choices is typed, its values (``optimizer.name=adam``)."""
    from mlp_cli.config import SECTIONS

    fields = {f"{section}.{field.name}": field for section, cls in SECTIONS.items()
              for field in dataclasses.fields(cls)}
    key, equals, _ = incomplete.partition("=")
    if equals and key in fields:
        values = [f"{key}={choice}" for choice in fields[key].metadata.get("choices", ())]
    else:
        values = [f"{key}=" for key in fields]
    return [value for value in values if value.startswith(incomplete)]


def one_of(registry: Mapping[str, object]) -> Callable[[str], str]:
    """An option's check that its value is one of a registry's names (click's usage error if not)."""

    def check(value: str) -> str:
        if value not in registry:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, registry))}"
                                     f"{did_you_mean(value, registry)}.")
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
