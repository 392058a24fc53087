"""`mlp log`: send runs trained before to a logger (their metrics.jsonl and config.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlp_cli.cli.app import app
from mlp_cli.cli.options import complete_from, draw_curves, one_of
from mlp_cli.nn.registry import listed
from mlp_cli.training.loggers.registry import LOGGERS

EXAMPLES_LOG = """
Examples:

  mlp log tensorboard runs/cs229 runs/best        (then: tensorboard --logdir runs)

  mlp log tensorboard sweeps/lr-20261201-142000   (every trial of the sweep)
"""


@app.command("log", epilog=EXAMPLES_LOG)
def log_command(
    logger: Annotated[str, typer.Argument(metavar="LOGGER", help=f"{listed(LOGGERS)}.", callback=one_of(LOGGERS),
                                          autocompletion=complete_from(LOGGERS))],
    dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Run or sweep directories.")],
) -> None:
    """Log finished runs (or a sweep's trials) as if they had been trained with --log LOGGER."""
    from mlp_cli.sweeps.records import is_sweep_dir, trial_dirs
    from mlp_cli.training.loggers.base import backfill

    runs = [trial for path in dirs for trial in (trial_dirs(path) if is_sweep_dir(path) else [path])]
    for run_dir in runs:
        epochs = backfill(logger, run_dir, draw_curves)
        typer.echo(f"{run_dir}: {epochs} epochs logged to {logger}")
