"""The Python API: load a trained model and use it, train from a config, load a dataset.

    >>> import mlp_cli
    >>> images, labels = mlp_cli.load_dataset("mnist", "test")      # uint8 (10000, 28, 28), (10000,)
    >>> model = mlp_cli.load_model("runs/best")                     # a run directory: its best.npz
    >>> model.predict(images[:5])                                   # array([7, 2, 1, 0, 4])
    >>> model.evaluate(images, labels).accuracy                     # 0.98...
    >>> run = mlp_cli.train("cs229", overrides={"train.epochs": 5}, out="runs/short")
    >>> run.best_accuracy, run.best_checkpoint

Everything here calls the same code as the command line; errors are ``mlp_cli.MlpError``s with
the same one-line messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlp_cli.config import Config
from mlp_cli.data.preprocess import Preprocessing
from mlp_cli.errors import UsageError
from mlp_cli.nn.evaluation import loss_and_accuracy
from mlp_cli.nn.network import INPUTS, Params, forward
from mlp_cli.training.checkpoint import Checkpoint, load_checkpoint

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

    def inputs(self, images: Any) -> np.ndarray:
        """Raw pixels (0-255) as uint8 or numbers: one image (28, 28) or (784,), or a stack
        (n, 28, 28) / (n, 784) -> the network's inputs X (n, 784), normalised."""
        pixels = np.asarray(images)
        if pixels.dtype == bool or not np.issubdtype(pixels.dtype, np.number):
            raise UsageError(f"images must be numbers (raw pixels 0-255), got dtype {pixels.dtype}")
        if pixels.shape in ((28, 28), (INPUTS,)):
            pixels = pixels.reshape(1, INPUTS)
        if pixels.ndim not in (2, 3) or int(np.prod(pixels.shape[1:])) != INPUTS:
            raise UsageError(f"images must be (n, 28, 28) or (n, 784) pixels, got shape {pixels.shape}")
        return self.preprocessing.apply(pixels, self.params.dtype)

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities (n, 10)."""
        with np.errstate(over="ignore"):
            return forward(self.params, self.inputs(images))

    def predict(self, images: Any) -> np.ndarray:
        """The most likely class of each image (n,)."""
        return self.predict_proba(images).argmax(axis=1)

    def evaluate(self, images: Any, labels: Any) -> Evaluation:
        """Mean loss and accuracy on labelled images (the evaluation training and ``mlp eval`` use)."""
        X, y = self.inputs(images), np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(y) != len(X) or (len(y) and (y.min() < 0 or y.max() >= self.params.W2.shape[1])):
            raise UsageError(f"labels must be {len(X)} class numbers from 0 to {self.params.W2.shape[1] - 1}")
        with np.errstate(over="ignore", invalid="ignore"):
            loss, accuracy = loss_and_accuracy(self.params, X, y)
        return Evaluation(loss=loss, accuracy=accuracy, examples=len(y))


def load_model(path: PathLike) -> Model:
    """A checkpoint (``.npz``), or a run directory (meaning its ``best.npz``, the run's model)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.npz"
    checkpoint = load_checkpoint(path)
    prep = Preprocessing.from_dict(checkpoint.meta["preprocessing"])
    return Model(params=checkpoint.params, preprocessing=prep, checkpoint=checkpoint, path=path)


def load_dataset(name: str = "mnist", split: str = "train", *, data_dir: PathLike | None = None,
                 mirrors: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (n, 28, 28) and labels int64 (n,) of a dataset split, downloaded and verified
    into the cache first if needed."""
    from mlp_cli.data.cache import load_dataset as load

    return load(name, split, data_dir=data_dir, mirrors=mirrors)


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
) -> Run:
    """Train a run and return it. ``config``: a YAML path, a name from configs/ ("cs229"), a
    mapping of sections ({"model": {"hidden": 64}}), a Config, or None for the defaults;
    ``overrides``: {"section.key": value}; ``out``: the run directory (default runs/<name>-<time>),
    created here and refused if it holds a run (unless ``overwrite``)."""
    from mlp_cli.training.metrics import read_metrics
    from mlp_cli.training.session import load_inputs, new_session, run_session

    resolved, name = _resolve(config, {**(overrides or {}), **({"run.dir": str(out)} if out else {})})
    with new_session(resolved, name, overwrite) as session:
        data = load_inputs(session, data_dir=data_dir, mirrors=tuple(mirrors))
        result = run_session(session, data)
    return Run(run_dir=result.run_dir, rows=read_metrics(result.run_dir), best_epoch=result.best_epoch,
               best_accuracy=result.best_accuracy, seconds=result.seconds)


def _resolve(config: Any, overrides: dict[str, Any]) -> tuple[Config, str]:
    """A validated Config and the name its default run directory starts with."""
    from mlp_cli.config_file import load_config, resolve_config_path

    if isinstance(config, Config):
        return load_config(None, overrides, base=config.to_dict()), "run"
    if isinstance(config, Mapping):
        return load_config(None, overrides, base=dict(config)), "run"
    if config is None:
        return load_config(None, overrides), "default"
    path = resolve_config_path(str(config))
    return load_config(path, overrides), path.stem if path else "run"
