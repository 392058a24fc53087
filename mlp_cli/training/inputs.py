"""The training inputs: the cached dataset split into train and dev, normalised, as floats.

``prepare_data`` loads the training split, cuts off the dev set (``data.dev_size`` images chosen
by ``data.split_seed``, as in CS229), fits the normalisation on the training part only (or
reuses a checkpoint's, when resuming) and returns float arrays ready for the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlp_cli.config import Config, check_against_data
from mlp_cli.data.augment import is_identity
from mlp_cli.data.preprocess import Preprocessing, fit_preprocessing, split_train_dev
from mlp_cli.errors import ConfigError

if TYPE_CHECKING:
    from mlp_cli.data.download import Reporter


@dataclass
class TrainingData:
    """Inputs ready for the network: X float (n, 784), y int64 (n,)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_dev: np.ndarray
    y_dev: np.ndarray
    preprocessing: Preprocessing
    checksums: dict[str, str] = field(default_factory=dict)
    images_train: np.ndarray | None = None  # (n, 28, 28) uint8 raw pixels, kept only when augmenting


def prepare_data(
    config: Config,
    *,
    data_dir: str | Path | None = None,
    mirrors: tuple[str, ...] | list[str] = (),
    reporter: Reporter | None = None,
    preprocessing: Preprocessing | None = None,
) -> TrainingData:
    """Load the training split, cut off the dev set, fit (or reuse) the normalisation."""
    from mlp_cli.data.cache import dataset_checksums, load_dataset

    images, labels = load_dataset(
        config.data.dataset, "train", data_dir=data_dir, mirrors=tuple(mirrors), reporter=reporter
    )
    if config.data.dev_size >= len(labels):
        raise ConfigError(
            f"data.dev_size = {config.data.dev_size} leaves no training examples out of "
            f"{len(labels)}; expected fewer than {len(labels)}"
        )
    train_idx, dev_idx = split_train_dev(
        len(labels), config.data.dev_size, config.data.split_seed, config.data.limit
    )
    check_against_data(config, len(train_idx))
    train_images = images[train_idx]
    prep = preprocessing or fit_preprocessing(config.data.preprocess, train_images)
    dtype = config.model.dtype
    return TrainingData(
        X_train=prep.apply(train_images, dtype),
        y_train=np.asarray(labels[train_idx], dtype=np.int64),
        X_dev=prep.apply(images[dev_idx], dtype),
        y_dev=np.asarray(labels[dev_idx], dtype=np.int64),
        preprocessing=prep,
        checksums=dataset_checksums(config.data.dataset),
        images_train=np.ascontiguousarray(train_images) if not is_identity(config.augment) else None,
    )
