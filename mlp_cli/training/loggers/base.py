"""What every logger is told, and how the loop's one observer reaches several.

A logger is a ``loop.Observer`` (``on_start``, ``on_step``, ``on_epoch``) that is also told, before
training starts, where the run stands (``RunStart``: fresh, or resumed from which checkpoint) and
is closed when it ends, however it ends. ``close`` returns one line describing a problem the
logger met (an unreachable tracking server) or None: a logger never stops the training.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_cli.training.loggers.registry import LOGGERS
from mlp_cli.training.loop import Observer

if TYPE_CHECKING:
    from mlp_cli.config import Config
    from mlp_cli.training.metrics import EpochMetrics

BATCH_TAG = "batch/loss"
# metrics.jsonl's numbers and the tag each is logged under, once per epoch at the row's step
EPOCH_TAGS = {
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "dev_loss": "dev/loss",
    "dev_accuracy": "dev/accuracy",
    "lr": "lr",
    "examples_per_second": "examples_per_second",
}


@dataclass(frozen=True)
class RunStart:
    config: Config
    run_dir: Path
    resumed_from: Path | None = None  # the checkpoint a resumed run starts from
    mode: str = "new"  # or resume.ResumePlan's: "continue", "branch", "overwrite"
    resumed_step: int = 0  # its step: what the run's history keeps
    changes: dict[str, list[Any]] = field(default_factory=dict)  # settings this resume changed
    tags: dict[str, str] = field(default_factory=dict)  # sweep, trial, parent: for the trackers
    # draws the run's learning curves (run_dir, out.png): given by the caller, from reports/
    draw_curves: Callable[[Path, Path], None] | None = None


class RunLogger(Observer):
    def begin(self, start: RunStart) -> None:
        pass

    def close(self, completed: bool = True) -> str | None:
        """``completed``: the run reached its end (not interrupted, not failed)."""
        return None


class Fanout(Observer):
    """One observer that passes every call on to each of several."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers

    def on_start(self, config: Config, run_dir: Path, steps_per_epoch: int, start_epoch: int) -> None:
        for observer in self.observers:
            observer.on_start(config, run_dir, steps_per_epoch, start_epoch)

    def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
        for observer in self.observers:
            observer.on_step(epoch, batch, steps_per_epoch, loss)

    def on_epoch(self, row: EpochMetrics, is_best: bool) -> None:
        for observer in self.observers:
            observer.on_epoch(row, is_best)


def make_logger(name: str) -> RunLogger:
    """The logger the registry names (its module is imported only now)."""
    logger: RunLogger = getattr(_module(name), LOGGERS[name].implementation.rpartition(".")[2])()
    return logger


def epoch_values(row: dict[str, Any]) -> list[tuple[str, float]]:
    """(tag, value) of a metrics row, in EPOCH_TAGS's order; a missing dev set logs nothing."""
    return [(tag, float(row[key])) for key, tag in EPOCH_TAGS.items() if row.get(key) is not None]


def flat_settings(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``section.key`` -> value, the settings that tell runs apart (``run.*`` says where, not how)."""
    return {f"{section}.{key}": value for section, values in config.items() if section != "run"
            for key, value in values.items()}


def check_loggers(config: Config) -> None:
    """What a logger refuses before any work (MLflow with no store named or no client)."""
    for name in config.run.log:
        check = getattr(_module(name), "check", None)
        if check is not None:
            check()


def _module(name: str) -> Any:
    return importlib.import_module(f"mlp_cli.training.loggers.{LOGGERS[name].implementation.rpartition('.')[0]}")


def open_loggers(start: RunStart) -> list[RunLogger]:
    """The loggers ``run.log`` names, each told where the run starts; none when it names none."""
    loggers: list[RunLogger] = []
    try:
        for name in start.config.run.log:
            logger = make_logger(name)
            logger.begin(start)
            loggers.append(logger)
    except BaseException:
        close_loggers(loggers)
        raise
    return loggers


def close_loggers(loggers: list[RunLogger], completed: bool = False) -> list[str]:
    """Close every logger (whatever happened); the problems they report, one line each."""
    problems = []
    for logger in loggers:
        problem = logger.close(completed)
        if problem:
            problems.append(problem)
    return problems


def backfill(name: str, run_dir: Path, draw_curves: Callable[[Path, Path], None] | None = None) -> int:
    """Log a finished run from its files (``mlp log``); the number of epochs it held."""
    epochs: int = _module(name).backfill(run_dir, draw_curves)
    return epochs
