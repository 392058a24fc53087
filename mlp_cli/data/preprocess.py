"""From raw images to network inputs: the train/dev split and the input normalisation.

The split follows CS229: a permutation of the 60,000 official training images drawn from
``numpy.random.RandomState(split_seed)`` (the legacy generator that ``np.random.seed(100)``
seeds, so seed 100 gives the course's exact dev set); its first ``dev_size`` indices are the dev
set and the rest the training set. The official test set is never touched here.

Normalisation statistics are fitted on the training split only and stored with every
checkpoint, so evaluation applies exactly what training used:

- ``standardize``: one scalar mean and one scalar std over all training pixels (CS229);
- ``scale``: pixels / 255, into [0, 1];
- ``none``: raw pixel values 0..255 as floats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlp_cli.errors import CheckpointError

# float32's largest and smallest normal numbers, as Python floats (compared with a record's floats,
# an np.float32 would cast them to float32 first, and overflow)
FLOAT32_MAX, FLOAT32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Preprocessing:
    method: str
    mean: float
    std: float

    def apply(self, images: np.ndarray, dtype: str | np.dtype = "float32") -> np.ndarray:
        """uint8 images (n, 28, 28) or (n, 784) -> float inputs X (n, 784)."""
        images = np.asarray(images)
        X = images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(dtype)  # also for 0 images
        if self.mean != 0.0:
            X -= X.dtype.type(self.mean)
        if self.std != 1.0:
            X /= X.dtype.type(self.std)
        return X

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Preprocessing:
        try:
            method, mean, std = data["method"], float(data["mean"]), float(data["std"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"preprocessing record is malformed: {_shown(data)}") from None
        if method not in ("standardize", "scale", "none") or not (abs(mean) <= FLOAT32_MAX and
                                                                  FLOAT32_TINY <= std <= FLOAT32_MAX):
            # finite and std > 0 in float32 too, the dtype the inputs may be made in (NaN fails every test)
            raise CheckpointError(f"preprocessing record is invalid: {_shown(data)}")
        return cls(method=method, mean=mean, std=std)


def _shown(data: Any) -> str:
    """A record in an error: at most 200 characters of it (a file may hold a megabyte there)."""
    text = repr(data)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text):,} characters)"


def fit_preprocessing(method: str, train_images: np.ndarray) -> Preprocessing:
    """Statistics from the training split only (float64, so they do not depend on dtype)."""
    if method == "standardize":
        mean, std = _pixel_mean_std(train_images)
        return Preprocessing("standardize", mean, std if std > 0 else 1.0)
    if method == "scale":
        return Preprocessing("scale", 0.0, 255.0)
    if method == "none":
        return Preprocessing("none", 0.0, 1.0)
    raise ValueError(f"unknown preprocessing {method!r}")


def _pixel_mean_std(images: np.ndarray, block: int = 5_000) -> tuple[float, float]:
    """Mean and (population) std of all pixels, as np.mean / np.std would give them.

    For integer pixels the sums of x and x^2 are accumulated exactly in 64-bit integers, block by
    block, instead of converting the whole split to float64 first (which would take 300 MB for
    MNIST). A uint8 pixel's square (at most 255^2 = 65025) fits in uint16, a quarter of the
    memory traffic of int64 (benchmarks/README.md has the timing).
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        return float(images.mean(dtype=np.float64)), float(images.std(dtype=np.float64))
    square_dtype = np.uint16 if images.dtype == np.uint8 else np.int64
    total = total_sq = 0
    for start in range(0, len(images), block):
        chunk = images[start : start + block]
        total += int(chunk.sum(dtype=np.int64))
        squares = chunk.astype(square_dtype)
        np.multiply(squares, squares, out=squares)
        total_sq += int(squares.sum(dtype=np.uint64 if square_dtype == np.uint16 else np.int64))
    n = images.size
    # variance = (n sum x^2 - (sum x)^2) / n^2, its numerator an exact (Python) integer: no
    # cancellation even when the pixels are large and their spread small
    return total / n, float(np.sqrt((n * total_sq - total * total) / (n * n)))


def split_train_dev(
    n: int, dev_size: int, split_seed: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, dev) of a seeded permutation of ``n`` examples; dev comes first.

    ``limit`` keeps only the first ``limit`` training indices (``data.limit``); dev is unchanged.
    """
    permutation = np.random.RandomState(split_seed).permutation(n)
    train = permutation[dev_size:]
    return (train if limit is None else train[:limit]), permutation[:dev_size]
