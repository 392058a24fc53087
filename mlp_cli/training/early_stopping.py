"""Early stopping: end training once dev accuracy has stopped improving.

After each epoch the training loop reports the dev accuracy to ``EarlyStopping.update``. An
accuracy more than ``min_delta`` above the reference (the accuracy of the last such improvement)
is progress and resets the count; after ``patience`` epochs in a row without progress, ``update``
returns True and the loop stops after saving that epoch's checkpoint.

``min_delta`` only decides what counts as progress. The weights worth keeping are those of the
highest dev accuracy, whatever the margin: the training state tracks that epoch (best.npz, the
run's model), not this class.

``state_dict`` / ``load_state_dict`` carry the counters through a checkpoint's JSON metadata, so
a resumed run stops at the same epoch as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlp_cli.errors import CheckpointError

if TYPE_CHECKING:
    from mlp_cli.config import EarlyStoppingConfig


class EarlyStopping:
    """Patience counter on dev accuracy (higher is better)."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1 or not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"patience must be >= 1 and min_delta >= 0, got {patience}, {min_delta}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.reference: float | None = None  # the accuracy progress is measured from
        self.bad_epochs = 0  # epochs since the last progress
        self.stopped_epoch: int | None = None  # the first epoch update returned True, if any

    @classmethod
    def from_config(cls, config: EarlyStoppingConfig) -> EarlyStopping | None:
        """The stopper a config asks for, or None when early stopping is off."""
        if not config.enabled:
            return None
        return cls(config.patience, config.min_delta)

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch is not None

    def update(self, epoch: int, dev_accuracy: float) -> bool:
        """Record the dev accuracy after ``epoch`` (1-based); True: stop training now."""
        dev_accuracy = float(dev_accuracy)
        if self.reference is None or dev_accuracy > self.reference + self.min_delta:
            self.reference, self.bad_epochs = dev_accuracy, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.stopped_epoch is None:
            self.stopped_epoch = epoch  # the first time: the epoch the run ended
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        """The counters, as JSON-ready numbers."""
        return {
            "reference": self.reference,
            "bad_epochs": self.bad_epochs,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s values; CheckpointError naming the problem if malformed."""
        legacy = {"best_accuracy", "best_epoch"}  # kept by release 0.1.0; the training state has them
        if not isinstance(state, dict) or set(state) - legacy != set(self.state_dict()):
            raise CheckpointError(f"early stopping state is malformed: {state!r:.200}")

        def accuracy(key: str) -> float | None:
            value = state[key]
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise CheckpointError(f"early stopping state {key!r} = {value!r}; expected an accuracy in [0, 1]")
            return float(value)

        def count(key: str, optional: bool = False) -> int | None:
            value = state[key]
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CheckpointError(f"early stopping state {key!r} = {value!r}; expected an integer >= 0")
            return value

        for key in legacy & set(state):  # still checked: a malformed one means a tampered file
            accuracy(key) if key == "best_accuracy" else count(key)
        reference, bad_epochs = accuracy("reference"), count("bad_epochs")
        stopped_epoch = count("stopped_epoch", optional=True)
        self.reference, self.stopped_epoch, self.bad_epochs = reference, stopped_epoch, int(bad_epochs or 0)

    def __repr__(self) -> str:
        return (
            f"<EarlyStopping patience={self.patience} min_delta={self.min_delta}: reference {self.reference}, "
            f"{self.bad_epochs} epochs without progress>"
        )
