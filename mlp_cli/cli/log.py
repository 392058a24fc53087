"""`mlp log`: send runs trained before to a logger (their metrics.jsonl and config.yaml)."""

from __future__ import annotations

import os
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
    """Log finished runs (or a sweep's trials) as if they had been trained with --log LOGGER.

    A sweep's trial that finished no epoch (it diverged in its first, say) has nothing to log: it
    is named and passed over."""
    from mlp_cli.sweeps.records import is_sweep_dir, trial_dirs
    from mlp_cli.training.loggers.base import backfill
    from mlp_cli.training.metrics import METRICS_FILE

    runs: list[tuple[Path, bool]] = []  # (run directory, a sweep's trial?), every sweep listed before any logging
    for path in dirs:
        runs += [(trial, True) for trial in trial_dirs(path)] if is_sweep_dir(path) else [(path, False)]
    for run_dir, is_trial in runs:
        if is_trial and not os.path.lexists(run_dir / METRICS_FILE):
            typer.echo(f"{run_dir}: nothing to log (it finished no epoch: no {METRICS_FILE})")
            continue
        epochs = backfill(logger, run_dir, draw_curves)
        typer.echo(f"{run_dir}: {epochs} epochs logged to {logger}")
