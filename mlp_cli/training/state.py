"""The state of a run: everything a checkpoint must hold to continue it bit-identically.

One object, ``TrainState``, carries the parameters, the optimiser (and its moments), the
learning-rate schedule (with the plateau schedule's counters), early stopping's counters, the
position (epochs finished, global step) and the best epoch so far. ``checkpoint_meta`` writes it
into a checkpoint's metadata and ``TrainState.resume`` reads it back, so a saved and reloaded
state is the same state. ``changes`` lists the settings changed on each resume, with the epoch
and step from which they applied: the run's record tells which settings produced which epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlp_cli.errors import CheckpointError, UsageError
from mlp_cli.nn.dropout import DROPOUT_STREAM
from mlp_cli.nn.network import Params, init_params
from mlp_cli.nn.optimizers import Optimizer, make_optimizer
from mlp_cli.nn.schedules import PlateauSchedule, Schedule, make_schedule
from mlp_cli.training.checkpoint import Checkpoint, save_checkpoint
from mlp_cli.training.early_stopping import EarlyStopping

if TYPE_CHECKING:
    from mlp_cli.config import Config
    from mlp_cli.training.inputs import TrainingData

NO_BEST = -1.0  # best_accuracy before the first epoch has been evaluated


@dataclass
class TrainState:
    params: Params
    optimizer: Optimizer
    schedule: Schedule
    stopper: EarlyStopping | None
    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken, over the whole run
    best_epoch: int = 0
    best_accuracy: float = NO_BEST
    changes: list[dict[str, Any]] = field(default_factory=list)  # settings changed on resume

    @property
    def plateau(self) -> PlateauSchedule | None:
        return self.schedule if isinstance(self.schedule, PlateauSchedule) else None

    @classmethod
    def fresh(cls, config: Config, steps_per_epoch: int) -> TrainState:
        """Initial weights from ``default_rng(train.seed)``; nothing trained yet."""
        model = config.model
        params = init_params(model.hidden, np.random.default_rng(config.train.seed), model.init, model.dtype)
        return cls.for_params(config, params, steps_per_epoch)

    @classmethod
    def resume(cls, config: Config, checkpoint: Checkpoint, steps_per_epoch: int,
               changes: dict[str, list[Any]] | None = None) -> TrainState:
        """The state saved in ``checkpoint``, continued under ``config`` (whose changed settings,
        ``changes``, are recorded as taking effect from the checkpoint's position)."""
        state = cls.for_params(config, checkpoint.params, steps_per_epoch)
        state.optimizer.load_state_dict(checkpoint.optimizer_state)
        meta = checkpoint.meta
        if state.plateau is not None and "plateau" in meta:
            state.plateau.load_state_dict(meta["plateau"])
        if state.stopper is not None and "early_stopping" in meta:
            state.stopper.load_state_dict(meta["early_stopping"])
            if state.stopper.stopped:
                raise UsageError(
                    f"this run stopped early at epoch {state.stopper.stopped_epoch} (no dev improvement for "
                    f"{state.stopper.patience} epochs); raise early_stopping.patience or set "
                    "early_stopping.enabled=false to train it further"
                )
        state.epoch, state.step = checkpoint.epoch, checkpoint.step
        state.best_epoch = int(meta.get("best_epoch", 0))
        state.best_accuracy = float(meta.get("best_accuracy", NO_BEST))
        state.changes = list(meta.get("changes", []))
        if changes:
            state.changes.append({"epoch": state.epoch + 1, "step": state.step, "settings": changes})
        state.start_batch(steps_per_epoch)  # the position must fit this run's batches
        return state

    @classmethod
    def for_params(cls, config: Config, params: Params, steps_per_epoch: int) -> TrainState:
        """A state for ``params`` with the optimiser, schedule and stopper ``config`` asks for."""
        schedule = make_schedule(config.schedule, config.optimizer.lr, steps_per_epoch=steps_per_epoch,
                                 total_steps=steps_per_epoch * config.train.epochs)
        return cls(params, make_optimizer(config.optimizer, params.as_dict()), schedule,
                   EarlyStopping.from_config(config.early_stopping))

    def start_batch(self, steps_per_epoch: int) -> int:
        """The batch of the current epoch at which training continues (0 at an epoch boundary)."""
        batch = self.step - self.epoch * steps_per_epoch
        if not 0 <= batch < steps_per_epoch:
            raise CheckpointError(
                f"checkpoint position (epoch {self.epoch}, step {self.step}) does not fit "
                f"{steps_per_epoch} steps per epoch; was the batch size or dataset changed?"
            )
        return batch

    def record_epoch(self, accuracy: float) -> tuple[bool, bool]:
        """After epoch ``self.epoch + 1`` was evaluated: advance the position, keep the best,
        feed the plateau schedule and early stopping. Returns (is_best, stop_early)."""
        self.epoch += 1
        is_best = accuracy > self.best_accuracy
        if is_best:
            self.best_epoch, self.best_accuracy = self.epoch, accuracy
        if self.plateau is not None:
            self.plateau.update(self.epoch, accuracy)  # the next epoch's rate
        stop_early = self.stopper is not None and self.stopper.update(self.epoch, accuracy)
        return is_best, stop_early

    def save(self, path: Path, config: Config, data: TrainingData, accuracy: float | None = None) -> None:
        save_checkpoint(path, self.params, self.optimizer.state_dict(), checkpoint_meta(self, config, data, accuracy))


def checkpoint_meta(state: TrainState, config: Config, data: TrainingData, accuracy: float | None) -> dict[str, Any]:
    """The metadata that makes a checkpoint a resumable state (checkpoint.py adds the versions)."""
    seed = config.train.seed
    meta: dict[str, Any] = {
        "config": config.to_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "best_epoch": state.best_epoch,
        "best_accuracy": state.best_accuracy,
        "accuracy": accuracy,
        "preprocessing": data.preprocessing.to_dict(),
        "datasets": data.checksums,
        "rng": {"seed": seed, "init": "default_rng(seed)", "shuffle": "default_rng([seed, epoch])"},
        "saved_at": datetime.now().isoformat(timespec="seconds"),
    }
    if config.train.dropout > 0 or config.train.input_dropout > 0:
        meta["rng"]["dropout"] = f"default_rng([seed, {DROPOUT_STREAM:#x}, epoch, batch])"
    if state.plateau is not None:
        meta["plateau"] = state.plateau.state_dict()
    if state.stopper is not None:
        meta["early_stopping"] = state.stopper.state_dict()
    if state.changes:
        meta["changes"] = state.changes
    return meta

