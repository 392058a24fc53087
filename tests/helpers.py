"""What the tests share besides fixtures (conftest.py holds those): real-MNIST lookup, IDX
bytes, a tiny dataset's shape, a reporter that records, a closed port, the CLI runner."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.config_file import load_config
from mlp_cli.data import registry as datasets
from mlp_cli.errors import MlpError
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.loop import Observer, TrainingInterrupted
from mlp_cli.training.metrics import read_metrics
from mlp_cli.training.session import new_session, resumed_session, run_session

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist"
TEST_MNIST_ENV = "MLP_TEST_MNIST"
USER_DATA_DIR = os.environ.get("MLP_DATA_DIR", "")  # the user's, read before any test sets its own
MIRROR_ENV_VARS = ("MLP_MNIST_MIRROR", "MLP_FASHION_MNIST_MIRROR")

runner = CliRunner()


def need_numba() -> None:
    """Skip without numba (the optional ``fast`` extra); with $CI set, fail instead: CI installs it."""
    if importlib.util.find_spec("numba") is None:
        if os.environ.get("CI"):
            pytest.fail("numba is not installed; CI must provide it (.ci/run installs the fast extra)")
        pytest.skip("numba (the fast extra) is not installed")


def mlp(*args: Any) -> Any:
    """``mlp ARGS`` in this process, through typer's CliRunner (stdout and stderr apart)."""
    return runner.invoke(app, [str(a) for a in args])


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mnist_copies() -> list[Path]:
    """The directories where the tests look for MNIST's four .gz files, in order."""
    from mlp_cli.data.cache import resolve_data_dir

    named = os.environ.get(TEST_MNIST_ENV, "").strip()
    return [*([Path(named).expanduser()] if named else []), OFFLINE_MNIST,
            resolve_data_dir(USER_DATA_DIR or None) / "mnist"]


def find_mnist_copy() -> Path | None:
    files = datasets.DATASETS["mnist"].files
    return next((d for d in mnist_copies() if all((d / f).is_file() for f in files)), None)


def idx_images(images: np.ndarray) -> bytes:
    """(n, rows, cols) uint8 -> IDX bytes."""
    n, rows, cols = images.shape
    header = (0x00000803).to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in (n, rows, cols)
    )
    return header + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """(n,) uint8 -> IDX bytes."""
    return (0x00000801).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + bytes(
        labels.astype(np.uint8)
    )


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@dataclass
class TinyDataset:
    """Four small, valid MNIST-format files registered (for the test) as ``mnist``."""

    gz: dict[str, bytes]  # file name -> .gz bytes as a mirror serves them
    images: dict[str, np.ndarray]  # split -> (n, 28, 28) uint8
    labels: dict[str, np.ndarray]  # split -> (n,) uint8
    spec: datasets.DatasetSpec

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.gz)


class RecordingReporter:
    """A reporter that remembers every call, for asserting what the user would be told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.lock = threading.Lock()

    def start(self, filename: str, total: int | None, mirror: str) -> None:
        self.events.append(("start", filename, str(total), mirror))

    def advance(self, nbytes: int) -> None:
        self.events.append(("advance", str(nbytes)))

    def done(self, filename: str, status: str) -> None:
        self.events.append(("done", filename, status))

    def note(self, text: str) -> None:
        self.events.append(("note", text))

    @property
    def notes(self) -> str:
        return "\n".join(e[1] for e in self.events if e[0] == "note")

    def statuses(self) -> dict[str, str]:
        return {e[1]: e[2] for e in self.events if e[0] == "done"}


def synthetic_training_data() -> Any:
    """500 training and 200 dev rows of Gaussian inputs, labelled by a random linear map: data a
    small network learns a little of in a few epochs (for the training-loop tests)."""
    from mlp_cli.data.preprocess import Preprocessing
    from mlp_cli.training.inputs import TrainingData

    rng = np.random.default_rng(0)
    X = rng.standard_normal((700, 784)).astype(np.float32)
    y = (X @ rng.standard_normal((784, 10))).argmax(axis=1)
    return TrainingData(X[:500], y[:500], X[500:], y[500:], Preprocessing("none", 0.0, 1.0), {"x": "y"})


# -- training through a session, as mlp train does (the loggers' tests) ----------------------


def logged_config(run_dir: Any, **overrides: Any) -> Any:
    """A small run on synthetic_training_data (8 steps an epoch), logged to TensorBoard."""
    settings = {"model.hidden": 16, "train.epochs": 5, "train.batch_size": 64, "optimizer.lr": 1.0,
                "run.dir": str(run_dir) if run_dir else None, "run.log": ["tensorboard"], "run.log_every": 3}
    return load_config(None, {**settings, **overrides})


class Losses(Observer):
    """Records every batch loss by global step, and asks to stop after ``stop_after`` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.losses: dict[int, float] = {}
        self.stop_after = stop_after

    def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
        self.losses[(epoch - 1) * steps_per_epoch + batch] = loss

    def requested(self) -> bool:
        return self.stop_after is not None and max(self.losses, default=0) >= self.stop_after


def train_new(run_dir: Path, data: Any, observer: Losses | None = None, **overrides: Any) -> None:
    """A new run (``--overwrite``) through a session, stopped where ``observer`` asks."""
    observer = observer or Losses()
    with new_session(logged_config(run_dir, **overrides), None, overwrite=True) as session:
        try:
            run_session(session, data, observer=observer, stop_requested=observer.requested)
        except TrainingInterrupted:
            pass


def train_resumed(checkpoint: Path, data: Any, observer: Losses | None = None, out: Path | None = None,
                  overwrite: bool = False, **overrides: Any) -> None:
    """``mlp train --resume CHECKPOINT`` (``--out``, ``--overwrite``, ``--set`` as ``overrides``)."""
    observer = observer or Losses()
    saved = load_checkpoint(checkpoint)
    base = {**saved.config, "run": {**saved.config["run"], "dir": None}}
    resolved = load_config(None, overrides, base=base)
    with resumed_session(resolved, saved, checkpoint, out, overwrite) as session:
        try:
            run_session(session, data, observer=observer, stop_requested=observer.requested)
        except TrainingInterrupted:
            pass


def no_proxies(monkeypatch: Any) -> None:
    """Undo the dead proxy every test gets, so that a request looks its host name up itself
    (only for hosts that never resolve, such as ``*.invalid``)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def signal_sweep(args: list[str], ready: Callable[[], bool], signum: int = signal.SIGINT) -> tuple[int, str]:
    """Run `mlp ARGS` (a sweep) in a real process, send it ``signum`` once ``ready()`` (what the
    trials wrote, never a clock), and return its exit code and stderr."""
    process = subprocess.Popen([sys.executable, "-m", "mlp_cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    try:
        deadline = time.monotonic() + 300  # a bound on a broken sweep, not a step of the test
        while not ready():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        process.send_signal(signum)  # to the sweep only: it tells its trials
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


def trial_epochs(sweep_dir: Path, trial: str) -> list[dict[str, Any]]:
    """A trial's metrics rows so far (none while it has not finished an epoch)."""
    path = sweep_dir / "trials" / trial / "metrics.jsonl"
    try:
        return read_metrics(path) if path.exists() else []
    except MlpError:  # a row being appended right now
        return []
