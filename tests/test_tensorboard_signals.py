"""A real `mlp train --log tensorboard` stopped by a signal (SIGTERM saves and exits; SIGKILL
gives no warning at all), then resumed: one stream, each step once, read by TensorBoard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from mlp_cli.training.checkpoint import load_checkpoint  # noqa: E402
from mlp_cli.training.loggers.base import BATCH_TAG, EPOCH_TAGS  # noqa: E402
from mlp_cli.training.metrics import read_metrics  # noqa: E402

LONG = ["--hidden", "64", "--batch", "50", "--epochs", "40", "--set", "data.limit=4000", "--set", "data.dev_size=500",
        "--set", "run.log_every=1", "--log", "tensorboard", "-q"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def wait_for_rows(run_dir: Path, rows: int, proc: subprocess.Popen, seconds: float = 120) -> None:
    """Until metrics.jsonl holds ``rows`` epochs (the event that matters, not a time)."""
    deadline = time.monotonic() + seconds
    while not ((run_dir / "metrics.jsonl").exists() and len(read_metrics(run_dir)) >= rows):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never got that far"
        time.sleep(0.05)


def wait_for_growth(run_dir: Path, proc: subprocess.Popen, more: int = 10 * 48, seconds: float = 120) -> None:
    """Until the event file has grown by ``more`` bytes (ten batch losses) from now."""
    [events] = [p for p in run_dir.iterdir() if "tfevents" in p.name]
    target, deadline = events.stat().st_size + more, time.monotonic() + seconds
    while events.stat().st_size < target:
        assert proc.poll() is None and time.monotonic() < deadline, "the run logged nothing more"
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_signalled_then_resumed_run_has_one_stream(mnist_data_dir: Path, tmp_path: Path, signum: int) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mlp_cli", "train", "--out", str(out), "--data-dir",
                             str(mnist_data_dir), *LONG], env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(out, 2, proc)
        wait_for_growth(out, proc)  # the killed process has logged steps its checkpoint does not hold
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signum if signum == signal.SIGKILL else proc.returncode == 128 + signum
    epoch = load_checkpoint(out / "last.npz").epoch
    done = subprocess.run([sys.executable, "-m", "mlp_cli", "train", "--resume", str(out / "last.npz"), "--epochs",
                           str(epoch + 2), "--data-dir", str(mnist_data_dir), "-q"], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    accumulator = EventAccumulator(str(out), size_guidance={"scalars": 0})
    accumulator.Reload()
    rows = read_metrics(out)
    for key, tag in EPOCH_TAGS.items():
        logged = [(event.step, event.value) for event in accumulator.Scalars(tag)]
        assert logged == [(row["step"], float(np.float32(row[key]))) for row in rows], tag
    steps = [event.step for event in accumulator.Scalars(BATCH_TAG)]
    assert steps == list(range(1, rows[-1]["step"] + 1))  # every step once, in order, none lost or repeated
