"""Evaluating a checkpoint on a split, with exactly the preprocessing it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlp_cli.data.preprocess import Preprocessing, split_train_dev
from mlp_cli.errors import CheckpointError, UsageError
from mlp_cli.nn.evaluation import loss_and_accuracy
from mlp_cli.training.checkpoint import Checkpoint

if TYPE_CHECKING:
    from mlp_cli.data.download import Reporter

EVAL_SPLITS = ("test", "dev", "train")  # the official test set, and the run's own dev and train


@dataclass
class EvalResult:
    split: str
    examples: int
    loss: float
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "examples": self.examples, "loss": self.loss, "accuracy": self.accuracy}


def load_split(
    checkpoint: Checkpoint,
    split: str,
    *,
    data_dir: str | Path | None = None,
    mirrors: tuple[str, ...] = (),
    reporter: Reporter | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), X float (n, 784), y int64 (n,)) of ``split``, as the checkpoint's
    run defined it (same dataset, dev split and preprocessing)."""
    from mlp_cli.data.cache import load_dataset

    if split not in EVAL_SPLITS:
        raise UsageError(f"unknown split {split!r}; expected one of {', '.join(EVAL_SPLITS)}")
    data = checkpoint.config.get("data", {})
    try:
        dataset = data["dataset"]
        dev_size, split_seed, limit = int(data["dev_size"]), int(data["split_seed"]), data.get("limit")
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("checkpoint's config lacks its data section") from None
    prep = Preprocessing.from_dict(checkpoint.meta["preprocessing"])
    images, labels = load_dataset(
        dataset, "test" if split == "test" else "train", data_dir=data_dir, mirrors=mirrors, reporter=reporter
    )
    if split != "test":
        train_idx, dev_idx = split_train_dev(
            len(labels), dev_size, split_seed, None if limit is None else int(limit)
        )
        index = dev_idx if split == "dev" else train_idx
        if len(index) == 0:
            raise UsageError(f"the checkpoint's run has no {split} split (data.dev_size = {dev_size})")
        images, labels = images[index], labels[index]
    X = prep.apply(images, checkpoint.params.dtype)
    return np.asarray(images), X, np.asarray(labels, dtype=np.int64)


def evaluate(checkpoint: Checkpoint, X: np.ndarray, y: np.ndarray, split: str) -> EvalResult:
    with np.errstate(over="ignore", invalid="ignore"):
        loss, accuracy = loss_and_accuracy(checkpoint.params, X, y)
    return EvalResult(split=split, examples=len(y), loss=loss, accuracy=accuracy)
