"""The Python API: load a trained model and use it, train from a config, load a dataset.

    >>> import mlp_cli
    >>> images, labels = mlp_cli.load_dataset("mnist", "test")      # uint8 (10000, 28, 28), (10000,)
    >>> model = mlp_cli.load_model("runs/best")                     # a run directory: its best.npz
    >>> model.predict(images[:5])                                   # array([7, 2, 1, 0, 4])
    >>> model.evaluate(images, labels).accuracy                     # 0.98...
    >>> run = mlp_cli.train("cs229", overrides={"train.epochs": 5}, out="runs/short")
    >>> run.best_accuracy, run.best_checkpoint
    >>> run = mlp_cli.train("cs229", on_epoch=lambda row: print(row["epoch"], row["dev_accuracy"]))
    >>> more = mlp_cli.resume(run.last_checkpoint, epochs=20)            # continue the same run

Everything here calls the same code as the command line; errors are ``mlp_cli.MlpError``s with
the same one-line messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlp_cli.config import SECTIONS, Config, show_value, unknown_name
from mlp_cli.data.preprocess import Preprocessing
from mlp_cli.errors import ConfigError, UsageError
from mlp_cli.nn.evaluation import loss_and_accuracy
from mlp_cli.nn.network import INPUTS, Params, forward
from mlp_cli.training.checkpoint import Checkpoint, load_checkpoint, model_checkpoint
from mlp_cli.training.loop import Observer

if TYPE_CHECKING:
    from mlp_cli.training.metrics import EpochMetrics
    from mlp_cli.training.session import Session

PathLike = str | Path


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean cross-entropy
    accuracy: float
    examples: int


@dataclass(frozen=True)
class Model:
    """A trained network with the normalisation it was trained with."""

    params: Params
    preprocessing: Preprocessing
    checkpoint: Checkpoint
    path: Path

    @property
    def dataset(self) -> str:
        return str(self.checkpoint.config["data"]["dataset"])

    def __repr__(self) -> str:
        """``Model(hidden=300, dataset='mnist', dtype=float32, accuracy=97.95% at epoch 12, path=...)``:
        what the model is, never its weight arrays."""
        accuracy = self.checkpoint.meta.get("accuracy")
        scored = f", accuracy={100 * accuracy:.2f}% at epoch {self.checkpoint.epoch}" if accuracy is not None else ""
        return (f"Model(hidden={self.params.W1.shape[1]}, dataset={self.dataset!r}, dtype={self.params.dtype}"
                f"{scored}, path={str(self.path)!r})")

    def inputs(self, images: Any) -> np.ndarray:
        """Raw pixels (0-255) as uint8 or numbers: one image (28, 28) or (784,), or a stack
        (n, 28, 28) / (n, 784) -> the network's inputs X (n, 784), normalised."""
        pixels = _pixel_rows(images)
        for start in range(0, len(pixels), BATCH):
            _check_pixels(pixels[start : start + BATCH], start)
        return self.preprocessing.apply(pixels, self.params.dtype)

    def _batch_inputs(self, pixels: np.ndarray, start: int) -> np.ndarray:
        """X of images ``start`` to ``start + BATCH`` of ``pixels`` (n, 784), checked first."""
        batch = pixels[start : start + BATCH]
        _check_pixels(batch, start)
        return self.preprocessing.apply(batch, self.params.dtype)

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities (n, 10), computed BATCH images at a time."""
        pixels = _pixel_rows(images)
        P = np.empty((len(pixels), self.params.W2.shape[1]), dtype=self.params.dtype)  # (n, k)
        with np.errstate(over="ignore"):
            for start in range(0, len(pixels), BATCH):
                P[start : start + BATCH] = forward(self.params, self._batch_inputs(pixels, start))
        return P

    def predict(self, images: Any) -> np.ndarray:
        """The most likely class of each image (n,), computed BATCH images at a time."""
        return self.predict_proba(images).argmax(axis=1).astype(np.int64, copy=False)

    def evaluate(self, images: Any, labels: Any) -> Evaluation:
        """Mean loss and accuracy on labelled images (the evaluation training and ``mlp eval`` use)."""
        pixels = _pixel_rows(images)
        if not len(pixels):  # a mean over no image has no value: 0% would read as a result
            raise UsageError("evaluate needs at least one labelled image, got none")
        y = _labels(labels, len(pixels), self.params.W2.shape[1])
        total_loss, correct = 0.0, 0
        for start in range(0, len(pixels), BATCH):
            X, batch_y = self._batch_inputs(pixels, start), y[start : start + BATCH]
            with np.errstate(over="ignore", invalid="ignore"):
                loss, accuracy = loss_and_accuracy(self.params, X, batch_y)
            total_loss += loss * len(batch_y)
            correct += round(accuracy * len(batch_y))
        count = max(len(y), 1)
        return Evaluation(loss=total_loss / count, accuracy=correct / count, examples=len(y))


BATCH = 10_000  # images converted at once: (10,000, 784) float32 inputs are 31 MB, whatever n is
PIXEL_MAX = 255


def _pixel_rows(images: Any) -> np.ndarray:
    """``images`` as rows of raw pixels (n, 784), without converting them: one image (28, 28) or
    (784,), or a stack (n, 28, 28) / (n, 784); any other shape is refused, never cropped."""
    try:
        pixels = np.asarray(images)
    except (ValueError, TypeError, OverflowError) as err:  # ragged nested lists, huge Python ints
        raise UsageError(f"images must be an array of pixels 0-255: {' '.join(str(err).split())[:120]}") from None
    if pixels.dtype.kind not in "iuf":  # numbers only: not bool, nor times (numpy counts timedelta64 an integer)
        raise UsageError(f"images must be numbers (raw pixels 0-255), got dtype {pixels.dtype}")
    side = int(round(INPUTS**0.5))
    if pixels.shape in ((side, side), (INPUTS,)):
        pixels = pixels.reshape(1, INPUTS)
    if pixels.shape[1:] not in ((INPUTS,), (side, side)):
        raise UsageError(f"images must be (n, {side}, {side}) or (n, {INPUTS}) pixels, got shape {pixels.shape}")
    return pixels.reshape(len(pixels), INPUTS)


def _check_pixels(batch: np.ndarray, start: int) -> None:
    """Every pixel finite and within 0-255 (uint8 always is); the first bad one is named."""
    if batch.dtype == np.uint8 or not batch.size:
        return
    with np.errstate(invalid="ignore"):
        bad = ~((batch >= 0) & (batch <= PIXEL_MAX))  # NaN compares False: bad too      (batch, 784)
    if bad.any():
        row, column = np.unravel_index(int(bad.argmax()), bad.shape)
        raise UsageError(f"images must be pixels 0-{PIXEL_MAX} (finite), got {batch[row, column]} "
                         f"in image {start + int(row)}")


def _labels(labels: Any, count: int, classes: int) -> np.ndarray:
    """Class numbers (n,) int64 for ``count`` images: integers, or floats that are whole."""
    try:
        y = np.asarray(labels).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        y = np.asarray([])
    whole = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and bool(np.all(np.isfinite(y) & (y == np.round(y)))))
    if y.dtype == bool or not whole or len(y) != count or (len(y) and (y.min() < 0 or y.max() >= classes)):
        raise UsageError(f"labels must be {count} class numbers from 0 to {classes - 1}")
    return y.astype(np.int64)


def load_model(path: PathLike) -> Model:
    """A checkpoint (``.npz``), or a run directory (meaning its ``best.npz``, the run's model)."""
    path = model_checkpoint(_path(path, "load_model's path"))
    checkpoint = load_checkpoint(path)
    prep = Preprocessing.from_dict(checkpoint.meta["preprocessing"])
    return Model(params=checkpoint.params, preprocessing=prep, checkpoint=checkpoint, path=path)


def load_dataset(name: str = "mnist", split: str = "train", *, data_dir: PathLike | None = None,
                 mirrors: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (n, 28, 28) and labels int64 (n,) of a dataset split, downloaded and verified
    into the cache first if needed."""
    from mlp_cli.data.cache import load_dataset as load

    for what, value in (("name", name), ("split", split)):
        if not isinstance(value, str):
            raise UsageError(f"load_dataset's {what} must be text, got {show_value(value)}")
    return load(name, split, data_dir=_optional_path(data_dir, "data_dir"), mirrors=_mirrors(mirrors))


@dataclass(frozen=True)
class Run:
    run_dir: Path
    rows: list[dict[str, Any]]  # metrics.jsonl of the whole run
    best_epoch: int
    best_accuracy: float  # dev accuracy (train accuracy without a dev set)
    seconds: float

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.npz"

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "last.npz"

    def model(self) -> Model:
        return load_model(self.best_checkpoint)


def train(
    config: PathLike | Mapping[str, Any] | Config | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    out: PathLike | None = None,
    overwrite: bool = False,
    data_dir: PathLike | None = None,
    mirrors: tuple[str, ...] = (),
    on_epoch: EpochCallback | None = None,
) -> Run:
    """Train a run and return it. ``config``: a YAML path, a name from configs/ ("cs229"), a
    mapping of sections ({"model": {"hidden": 64}}), a Config, or None for the defaults;
    ``overrides``: {"section.key": value}; ``out``: the run directory (default runs/<name>-<time>),
    created here and refused if it holds a run (unless ``overwrite``); ``on_epoch``: called after
    each epoch with its metrics row (the dict metrics.jsonl records: epoch, train_loss,
    dev_accuracy, ...), for progress."""
    from mlp_cli.training.session import new_session

    out, data_dir = _optional_path(out, "out"), _optional_path(data_dir, "data_dir")
    _check_flag(overwrite, "train's overwrite")
    _check_callback(on_epoch)
    resolved, name = _resolve(config, {**_overrides(overrides), **({"run.dir": str(out)} if out else {})})
    return _run(new_session(resolved, name, overwrite), data_dir, mirrors, on_epoch)


def resume(
    checkpoint: PathLike,
    *,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    out: PathLike | None = None,
    overwrite: bool = False,
    data_dir: PathLike | None = None,
    mirrors: tuple[str, ...] = (),
    on_epoch: EpochCallback | None = None,
) -> Run:
    """Continue a run from ``checkpoint`` (its last.npz: the latest state), as ``mlp train
    --resume`` does: up to ``epochs`` in all; ``overrides`` may change what a resumed run may
    (resume.RESUME_RULES); ``out`` branches into a new directory; ``on_epoch`` as for train."""
    from mlp_cli.config_file import load_config
    from mlp_cli.training.resume import resume_source
    from mlp_cli.training.session import resumed_session

    source = resume_source(_path(checkpoint, "resume's checkpoint"))
    out, data_dir = _optional_path(out, "out"), _optional_path(data_dir, "data_dir")
    _check_flag(overwrite, "resume's overwrite")
    _check_callback(on_epoch)
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)):
        raise UsageError(f"resume's epochs must be a whole number, got {show_value(epochs)}")
    saved = load_checkpoint(source)
    base = {**saved.config, "run": {**saved.config.get("run", {}), "dir": None}}
    settings = {**_overrides(overrides), **({"train.epochs": epochs} if epochs is not None else {})}
    resolved = load_config(None, settings, base=base)
    return _run(resumed_session(resolved, saved, source, out, overwrite), data_dir, mirrors, on_epoch)


EpochCallback = Callable[[dict[str, Any]], object]


class _Progress(Observer):
    """Hands each epoch's metrics row to the caller's ``on_epoch``."""

    def __init__(self, on_epoch: EpochCallback) -> None:
        self.callback = on_epoch

    def on_epoch(self, row: EpochMetrics, is_best: bool) -> None:
        self.callback(row.to_dict())


def _run(session: Session, data_dir: Path | None, mirrors: Any, on_epoch: EpochCallback | None) -> Run:
    """Load the session's data, train, and read the run back."""
    from mlp_cli.training.metrics import read_metrics
    from mlp_cli.training.session import load_inputs, run_session

    with session:
        data = load_inputs(session, data_dir=data_dir, mirrors=_mirrors(mirrors))
        result = run_session(session, data, observer=_Progress(on_epoch) if on_epoch else None)
    return Run(run_dir=result.run_dir, rows=read_metrics(result.run_dir), best_epoch=result.best_epoch,
               best_accuracy=result.best_accuracy, seconds=result.seconds)


def _check_callback(on_epoch: Any) -> None:
    if on_epoch is not None and not callable(on_epoch):
        raise UsageError(f"on_epoch must be a function taking a metrics row, got {show_value(on_epoch)}")


def _check_flag(value: Any, what: str) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{what} must be True or False, got {show_value(value)}")


def _resolve(config: Any, overrides: dict[str, Any]) -> tuple[Config, str]:
    """A validated Config and the name its default run directory starts with."""
    from mlp_cli.config_file import load_config, resolve_config_path

    if isinstance(config, Config):
        return load_config(None, overrides, base=config.to_dict()), "run"
    if isinstance(config, Mapping):
        return load_config(None, overrides, base=_sections(config)), "run"
    if config is None:
        return load_config(None, overrides), "default"
    path = resolve_config_path(str(_path(config, "train's config")))
    return load_config(path, overrides), path.stem if path else "run"


def _sections(config: Mapping[Any, Any]) -> dict[str, Any]:
    """A mapping of sections, held to a config file's rules: an unknown section is named (a
    misspelt one would otherwise be ignored and the run trained with the defaults)."""
    for section, values in config.items():
        if section not in SECTIONS:
            raise ConfigError(unknown_name("section", str(section), list(SECTIONS), where=None))
        if not isinstance(values, Mapping):
            raise ConfigError(f"section {section!r} must be a mapping of keys to values, got {show_value(values)}")
    return {section: dict(values) for section, values in config.items()}


def _overrides(overrides: Any) -> dict[str, Any]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping) or not all(isinstance(key, str) for key in overrides):
        raise UsageError(f"overrides must map 'section.key' to a value, got {show_value(overrides)}")
    return dict(overrides)


def _path(value: Any, what: str) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise UsageError(f"{what} must be a path, got {show_value(value)}")
    return Path(value)


def _optional_path(value: Any, what: str) -> Path | None:
    return None if value is None else _path(value, what)


def _mirrors(mirrors: Any) -> tuple[str, ...]:
    if isinstance(mirrors, str) or not isinstance(mirrors, Sequence) or not all(isinstance(m, str) for m in mirrors):
        raise UsageError(f"mirrors must be a tuple of URLs, got {show_value(mirrors)}")
    return tuple(mirrors)
