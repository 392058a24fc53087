"""Evaluating a checkpoint on a split, with exactly the preprocessing it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlp_cli.data.preprocess import Preprocessing, split_train_dev
from mlp_cli.errors import CheckpointError, UsageError
from mlp_cli.memory import require_memory
from mlp_cli.nn.evaluation import evaluation_layout, loss_and_accuracy
from mlp_cli.nn.network import CLASSES, INPUTS
from mlp_cli.training.checkpoint import Checkpoint

if TYPE_CHECKING:
    from mlp_cli.data.download import Reporter

EVAL_SPLITS = ("test", "dev", "train")  # the official test set, and the run's own dev and train
# What an evaluation holds beyond the layout and data counted below, as a share of them: measured
# 784-20000-10 float64, test split (10,000 rows): 540 MiB at the peak against 494 MiB counted.
EVAL_MARGIN = 1.25


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
    run defined it (same dataset, dev split and preprocessing). ResourceError before the data is
    read if evaluating the checkpoint on it needs more memory than is available."""
    from mlp_cli.data.cache import load_dataset
    from mlp_cli.data.registry import get_spec

    if split not in EVAL_SPLITS:
        raise UsageError(f"unknown split {split!r}; expected one of {', '.join(EVAL_SPLITS)}")
    data = checkpoint.config.get("data", {})
    try:
        dataset = data["dataset"]
        dev_size, split_seed, limit = int(data["dev_size"]), int(data["split_seed"]), data.get("limit")
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("checkpoint's config lacks its data section") from None
    prep = Preprocessing.from_dict(checkpoint.meta["preprocessing"])
    stored = "test" if split == "test" else "train"
    count = get_spec(dataset).splits[stored].count  # the examples of the file load_dataset reads
    index = None
    if split != "test":
        train_idx, dev_idx = split_train_dev(count, dev_size, split_seed, None if limit is None else int(limit))
        index = dev_idx if split == "dev" else train_idx
        if len(index) == 0:
            raise UsageError(f"the checkpoint's run has no {split} split (data.dev_size = {dev_size})")
    require_memory(evaluation_memory(checkpoint, count, count if index is None else len(index)),
                   f"evaluating {checkpoint.params.hidden} hidden units on the {split} split", "free memory, "
                   "or use a machine with more")
    images, labels = load_dataset(dataset, stored, data_dir=data_dir, mirrors=mirrors, reporter=reporter)
    if index is not None:
        images, labels = images[index], labels[index]
    X = prep.apply(images, checkpoint.params.dtype)
    return np.asarray(images), X, np.asarray(labels, dtype=np.int64)


def evaluation_memory(checkpoint: Checkpoint, stored: int, rows: int) -> int:
    """Bytes an evaluation of ``rows`` of a file of ``stored`` images allocates besides the weights:
    the images (uint8, and their rows picked), X in the model's dtype, the buffers of
    ``loss_and_accuracy``, the scores and probabilities (float64), with ``EVAL_MARGIN``."""
    dtype, hidden = checkpoint.params.dtype, checkpoint.params.hidden
    buffers = sum(item.nbytes(dtype) for item in evaluation_layout(rows, INPUTS, hidden, CLASSES))
    data = (stored + rows) * INPUTS + rows * INPUTS * dtype.itemsize + 2 * rows * CLASSES * 8
    return int(EVAL_MARGIN * (buffers + data))


def evaluate(checkpoint: Checkpoint, X: np.ndarray, y: np.ndarray, split: str) -> EvalResult:
    with np.errstate(over="ignore", invalid="ignore"):
        loss, accuracy = loss_and_accuracy(checkpoint.params, X, y)
    return EvalResult(split=split, examples=len(y), loss=loss, accuracy=accuracy)
