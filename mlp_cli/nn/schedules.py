"""Learning-rate schedules: the rate for each 0-based global step of a run.

``make_schedule`` looks the config's ``schedule.name`` up in ``mlp_cli.nn.registry.SCHEDULES``
and calls the function named there with the fields it reads:

- ``constant``: base_lr.
- ``step``: ``base_lr * gamma ** (step // (step_size * steps_per_epoch))``, i.e. multiplied
  by gamma every ``step_size`` epochs, counted from the start of the run.
- ``cosine``: ``min_lr + (base_lr - min_lr) (1 + cos(pi * progress)) / 2`` with progress
  going from 0 at the end of warmup to 1 at ``total_steps`` (so the final update of a run
  of total_steps steps uses a rate just above min_lr); min_lr after that.
- ``plateau``: a :class:`PlateauSchedule`, base_lr until dev accuracy stalls; the training
  loop reports each epoch's dev accuracy to its ``update`` (the one schedule that depends on
  the run).

With ``warmup_epochs`` = E > 0 the first W = E * steps_per_epoch steps of any of them instead
ramp linearly, ``base_lr * (step + 1) / W``, reaching base_lr on step W - 1 (no step is wasted
at 0). The config validates every value (and that the warmup is shorter than the run); nothing
here checks them again. Rates are Python floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlp_cli.errors import CheckpointError, ConfigError
from mlp_cli.nn.registry import SCHEDULES

Schedule = Callable[[int], float]


@dataclass(frozen=True)
class Steps:
    """Where a run's steps fall: in all, per epoch, and in the warmup."""

    total: int
    per_epoch: int
    warmup_epochs: int

    @property
    def warmup(self) -> int:
        return self.warmup_epochs * self.per_epoch


def make_schedule(settings: Any, base_lr: float, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    """Return ``lr(step)`` for the config's ``schedule`` section ``settings`` (already validated):
    its ``name``, ``warmup_epochs`` and the fields its registry entry lists."""
    spec = SCHEDULES.get(settings.name)
    if spec is None:
        raise ConfigError(f"unknown schedule {settings.name!r}; choose one of: {', '.join(SCHEDULES)}")
    steps = Steps(total_steps, steps_per_epoch, settings.warmup_epochs)
    build = BUILDERS[spec.implementation]
    options = {field: getattr(settings, field) for field in spec.fields}
    return build(float(base_lr), steps, **options)


def with_warmup(base_lr: float, steps: Steps, decayed: Schedule) -> Schedule:
    """The linear warmup for ``steps.warmup`` steps, then ``decayed``."""

    def schedule(step: int) -> float:
        if step < 0:
            raise ValueError(f"a schedule's step is 0-based, got {step}")
        if step < steps.warmup:
            return base_lr * (step + 1) / steps.warmup
        return decayed(step)

    return schedule


def constant(base_lr: float, steps: Steps) -> Schedule:
    return with_warmup(base_lr, steps, lambda step: base_lr)


def step_decay(base_lr: float, steps: Steps, *, step_size: int, gamma: float) -> Schedule:
    steps_per_decay, gamma = step_size * steps.per_epoch, float(gamma)
    return with_warmup(base_lr, steps, lambda step: base_lr * gamma ** (step // steps_per_decay))


def cosine(base_lr: float, steps: Steps, *, min_lr: float) -> Schedule:
    min_lr, decay_steps = float(min_lr), steps.total - steps.warmup

    def decayed(step: int) -> float:
        progress = min(1.0, (step - steps.warmup) / decay_steps)
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return with_warmup(base_lr, steps, decayed)


def plateau(
    base_lr: float, steps: Steps, *, plateau_patience: int, plateau_factor: float,
    plateau_min_delta: float, min_lr: float,
) -> PlateauSchedule:
    return PlateauSchedule(
        base_lr, patience=plateau_patience, factor=float(plateau_factor), min_delta=float(plateau_min_delta),
        min_lr=float(min_lr), warmup_epochs=steps.warmup_epochs, steps_per_epoch=steps.per_epoch,
    )


# The builders the registry's entries name (``ScheduleSpec.implementation``): a mapping that mypy
# and a rename can see; a test holds it and the registry in step.
BUILDERS: dict[str, Callable[..., Schedule]] = {f.__name__: f for f in (constant, step_decay, cosine, plateau)}


class PlateauSchedule:
    """Reduce the learning rate on a plateau of dev accuracy (PyTorch's ReduceLROnPlateau, mode
    "max", absolute threshold).

    ``schedule(step)`` is the rate for a 0-based global step, like every schedule: the linear
    warmup for the first ``warmup_epochs`` epochs, then ``base_lr * factor ** reductions``,
    never below ``min_lr``. The training loop calls ``update(epoch, dev_accuracy)`` after each
    epoch's evaluation: an accuracy above ``best + min_delta`` is an improvement and becomes the
    new best; after ``patience`` epochs in a row without one, the rate is multiplied by
    ``factor`` (from the next step on) and the count starts again. Epochs inside the warmup
    record their accuracy but never count against the patience.

    The state (``state_dict``: best accuracy, epochs without improvement, reductions so far) is
    three JSON numbers for the checkpoint's metadata; the rate is recomputed from the count of
    reductions, so a resumed run uses bit-identical rates.
    """

    name = "plateau"

    def __init__(
        self,
        base_lr: float,
        *,
        patience: int,
        factor: float,
        min_delta: float = 0.0,
        min_lr: float = 0.0,
        warmup_epochs: int = 0,
        steps_per_epoch: int = 1,
    ) -> None:
        self.base_lr, self.factor, self.min_delta, self.min_lr = base_lr, factor, min_delta, min_lr
        self.patience, self.warmup_epochs = patience, warmup_epochs
        self._warmup_steps = warmup_epochs * steps_per_epoch
        self.best: float | None = None  # best dev accuracy so far
        self.bad_epochs = 0  # epochs since the last improvement (or reduction)
        self.reductions = 0

    @property
    def lr(self) -> float:
        """The rate after warmup, as of now."""
        return max(self.min_lr, self.base_lr * self.factor**self.reductions)

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"a schedule's step is 0-based, got {step}")
        if step < self._warmup_steps:
            return self.base_lr * (step + 1) / self._warmup_steps
        return self.lr

    def update(self, epoch: int, dev_accuracy: float) -> bool:
        """Record the dev accuracy after ``epoch`` (1-based); True when the rate was reduced."""
        dev_accuracy = float(dev_accuracy)
        if self.best is None or dev_accuracy > self.best + self.min_delta:
            self.best, self.bad_epochs = dev_accuracy, 0
            return False
        if epoch <= self.warmup_epochs:
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience or self.lr <= self.min_lr:
            return False
        self.reductions += 1
        self.bad_epochs = 0
        return True

    def state_dict(self) -> dict[str, float | int | None]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "reductions": self.reductions}

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        """Restore ``state_dict``'s values; CheckpointError if they are malformed (then nothing
        changes)."""
        if not isinstance(state, dict) or set(state) != set(self.state_dict()):
            raise CheckpointError(f"plateau schedule state is malformed: {state!r}")
        best, bad_epochs, reductions = state["best"], state["bad_epochs"], state["reductions"]
        counts_ok = all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (bad_epochs, reductions)
        )
        best_ok = best is None or (
            isinstance(best, (int, float)) and not isinstance(best, bool) and math.isfinite(best)
        )
        if not (counts_ok and best_ok):
            raise CheckpointError(f"plateau schedule state is invalid: {state!r}")
        self.best = None if best is None else float(best)
        self.bad_epochs, self.reductions = int(bad_epochs), int(reductions)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<PlateauSchedule lr={self.lr:g} after {self.reductions} reductions, best={self.best}>"
