"""The training loop: mini-batch gradient descent on the hand-derived gradients.

``train`` reads like the loop it runs: for each epoch, take the batches (``batches.Batches``),
step on each (``step.train_step``), then evaluate train and dev (``step.evaluate_splits``), keep
the best, and write the record (``record.RunRecord``). The run's whole state is one
``state.TrainState``, which round-trips through ``last.npz``.

Reproducibility: the initial weights come from ``default_rng(seed)`` and each epoch's shuffling
order from ``default_rng([seed, epoch])``, so a run can be resumed at any step (even mid-epoch)
and continue with bit-identical numbers. Interruption (``stop_requested`` returning True, which
the CLI wires to Ctrl-C, SIGTERM and SIGHUP) is honoured between two steps, never inside an
update.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlp_cli.config import Config, selection_accuracy
from mlp_cli.errors import Interrupted
from mlp_cli.nn.workspace import Workspace
from mlp_cli.stop_signals import StopExit
from mlp_cli.training.batches import Batches, steps_per_epoch
from mlp_cli.training.checkpoint import Checkpoint
from mlp_cli.training.inputs import TrainingData
from mlp_cli.training.metrics import EpochMetrics
from mlp_cli.training.record import RunRecord
from mlp_cli.training.resume import check_resumable
from mlp_cli.training.state import TrainState
from mlp_cli.training.step import DivergenceGuard, Dropout, evaluate_splits, train_step


class TrainingInterrupted(Interrupted):
    """The user (or a signal) stopped training; a checkpoint was saved to resume from."""

    exit_code: int = StopExit.SIGINT

    def __init__(self, message: str, exit_code: int = StopExit.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class TrainResult:
    run_dir: Path
    rows: list[EpochMetrics]
    best_epoch: int
    best_accuracy: float
    seconds: float


class Observer:
    """Hooks the CLI implements to show progress; the defaults do nothing."""

    def on_start(self, config: Config, run_dir: Path, steps_per_epoch: int, start_epoch: int) -> None:
        pass

    def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
        pass

    def on_epoch(self, row: EpochMetrics, is_best: bool) -> None:
        pass


def train(
    config: Config,
    data: TrainingData,
    run_dir: str | Path,
    *,
    resume: Checkpoint | None = None,
    observer: Observer | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Train until ``config.train.epochs`` epochs are done (counting those in ``resume``, whose
    run may continue only with the changes resume.RESUME_RULES allows; they are recorded)."""
    run_dir, observer = Path(run_dir), observer or Observer()
    steps = steps_per_epoch(data, config)
    if resume is not None:
        state = TrainState.resume(config, resume, steps, check_resumable(config, resume))
    else:
        state = TrainState.fresh(config, steps)
    start_batch = state.start_batch(steps)
    record, batches = RunRecord(run_dir, config, data), Batches(data, config)
    guard, workspace = DivergenceGuard(run_dir, state.params.W2.shape[1]), Workspace()
    dropout = Dropout(config, workspace)
    rows: list[EpochMetrics] = []
    run_start = time.perf_counter()
    observer.on_start(config, run_dir, steps, state.epoch + 1)
    while state.epoch < config.train.epochs:
        epoch, epoch_start = state.epoch + 1, time.perf_counter()
        for batch, X, y in batches.epoch(epoch, start_batch):
            loss = train_step(state, X, y, config.train.l2, workspace, dropout.masks(epoch, batch, X))
            guard.check(loss, state, epoch, batch + 1)
            observer.on_step(epoch, batch + 1, steps, loss)
            if batch + 1 < steps and stop_requested():
                raise _interrupted(record.save_interrupted(state), f"during epoch {epoch} (step {state.step})")
        seen = len(data.y_train) - start_batch * config.train.batch_size  # a resumed epoch is partial
        row, is_best, stop_early = end_of_epoch(state, data, workspace, guard, epoch_start, seen)
        row = dataclasses.replace(row, elapsed=time.perf_counter() - run_start, changes=_changes(state, row, rows))
        rows.append(row)
        record.epoch_done(state, row, selection_accuracy(row.to_dict()), is_best)
        observer.on_epoch(row, is_best)
        start_batch = 0
        if stop_early:
            break
        if stop_requested() and state.epoch < config.train.epochs:
            raise _interrupted(record.last, f"after epoch {state.epoch}")
    return TrainResult(run_dir=run_dir, rows=rows, best_epoch=state.best_epoch,
                       best_accuracy=state.best_accuracy, seconds=time.perf_counter() - run_start)


def end_of_epoch(
    state: TrainState, data: TrainingData, workspace: Workspace, guard: DivergenceGuard,
    epoch_start: float, examples_seen: int,
) -> tuple[EpochMetrics, bool, bool]:
    """Evaluate the epoch just trained, advance the state; (metrics row, is_best, stop_early)."""
    seconds = time.perf_counter() - epoch_start
    epoch, lr = state.epoch + 1, state.schedule(state.step - 1)
    train_loss, train_accuracy, dev_loss, dev_accuracy = evaluate_splits(state, data, workspace)
    guard.check(train_loss, state, epoch, state.step)
    if dev_loss is not None:
        guard.check(dev_loss, state, epoch, state.step, finite_only=True)
    row = EpochMetrics(
        epoch=epoch, step=state.step, train_loss=train_loss, train_accuracy=train_accuracy,
        dev_loss=dev_loss, dev_accuracy=dev_accuracy, lr=float(lr), seconds=seconds,
        examples_per_second=examples_seen / seconds if seconds > 0 else 0.0, elapsed=0.0,
    )
    is_best, stop_early = state.record_epoch(selection_accuracy(row.to_dict()))
    return dataclasses.replace(row, stopped_early=stop_early), is_best, stop_early


def _changes(state: TrainState, row: EpochMetrics, rows: list[EpochMetrics]) -> dict[str, list[Any]] | None:
    """On the first row this process writes, the settings changed by its resume, if any."""
    latest = state.changes[-1] if state.changes and not rows else None
    return latest["settings"] if latest is not None and latest["epoch"] == row.epoch else None


def _interrupted(checkpoint: Path, when: str) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"interrupted {when}; saved {checkpoint}; continue with: mlp train --resume {checkpoint}"
    )
