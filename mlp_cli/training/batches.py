"""Mini-batches of one epoch, in the order the run's seed gives them.

Three ways to form a batch, chosen once per run: fresh random distortions of the raw pixels
(augmentation on), consecutive rows as views (no shuffling, as in CS229), or the shuffled rows
gathered into one reused buffer. The order of epoch e comes from ``default_rng([seed, e])`` and a
batch's distortions from ``batch_rng(seed, e, b)``, so a run resumed at any batch sees exactly
the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from mlp_cli.config import Config
from mlp_cli.data.augment import augment, batch_rng
from mlp_cli.training.inputs import TrainingData


def steps_per_epoch(data: TrainingData, config: Config) -> int:
    """Batches in one epoch; the last one may be smaller than ``train.batch_size``."""
    return math.ceil(len(data.y_train) / config.train.batch_size)


class Batches:
    """Iterates (batch index, X (B, 784), y (B,)) over one epoch, from ``start`` on."""

    def __init__(self, data: TrainingData, config: Config) -> None:
        self.data, self.config = data, config
        size = min(config.train.batch_size, len(data.y_train))
        self._gather = np.empty((size, data.X_train.shape[1]), dtype=data.X_train.dtype)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        data, train = self.data, self.config.train
        n, size = len(data.y_train), train.batch_size
        order = np.random.default_rng([train.seed, epoch]).permutation(n) if train.shuffle else None
        for batch in range(start, steps_per_epoch(data, self.config)):
            lo, hi = batch * size, min(n, (batch + 1) * size)
            if data.images_train is not None:  # fresh distortions, then the stored preprocessing
                picked = slice(lo, hi) if order is None else order[lo:hi]
                pixels = augment(data.images_train[picked], self.config.augment, batch_rng(train.seed, epoch, batch))
                yield batch, data.preprocessing.apply(pixels, data.X_train.dtype), data.y_train[picked]
            elif order is None:  # batches in order: views, no copy
                yield batch, data.X_train[lo:hi], data.y_train[lo:hi]
            else:  # the shuffled rows, gathered into one reused buffer
                X = np.take(data.X_train, order[lo:hi], axis=0, out=self._gather[: hi - lo], mode="clip")
                yield batch, X, data.y_train[order[lo:hi]]
