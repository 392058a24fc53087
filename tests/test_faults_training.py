"""Fault injection for training runs: signals, kills during checkpoint writes, divergence, a full
or read-only disk. Real MNIST (the offline copy), kept small; real processes where a signal is
the point."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fault_disk import read_only
from helpers import mlp

from mlp_cli.nn.network import PARAM_NAMES
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.metrics import EpochMetrics, append_metrics, read_metrics

SMALL = ["--hidden", "32", "--batch", "100", "--set", "data.limit=2000", "--set", "data.dev_size=1000"]


def mlp_process(*args: str, **kwargs) -> subprocess.Popen:
    """``python -m mlp_cli ...`` with one BLAS thread: on a busy machine OpenBLAS's threads can
    make a training step a hundred times slower, and these tests time signals against steps."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mlp_cli", *args], env=env, **kwargs)


def train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(data_dir), "--out", str(out), *SMALL, *extra]


def stop_line(stderr: str) -> str:
    """The one line a stop on a signal is reported in: no "error:" prefix, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and not lines[0].startswith("error") and "Traceback" not in stderr, stderr
    return lines[0]


def error_line(stderr: str) -> str:
    """The one line an error is reported in (and no traceback)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def one_error_line(result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return error_line(result.stderr)


def assert_no_nan_written(run_dir: Path) -> None:
    """Every metrics row finite; every checkpoint loads (which checks its weights are finite)."""
    if (run_dir / "metrics.jsonl").exists():
        text = (run_dir / "metrics.jsonl").read_text()
        assert "NaN" not in text and "Infinity" not in text
        for row in read_metrics(run_dir):
            assert all(np.isfinite(v) for v in row.values() if isinstance(v, float))
    for path in run_dir.glob("*.npz"):
        load_checkpoint(path)


# -- SIGKILL while a checkpoint is being written ---------------------------------------------------

WRITER = """
import os, sys, time
import numpy as np
from mlp_cli.training.checkpoint import save_checkpoint
from mlp_cli.nn.network import init_params

path, pause = sys.argv[1], sys.argv[2] == "pause"
params = init_params(256, np.random.default_rng(0))  # W1 alone is 784 x 256 float32: 800 kB
meta = {"config": {"model": {"hidden": 256}}, "preprocessing": {"method": "none", "mean": 0.0, "std": 1.0}}
real_fsync = os.fsync

def announced_fsync(fd):  # the new file is written, not yet renamed: say so, and linger there
    print("in fsync", flush=True)
    time.sleep(5)
    real_fsync(fd)

start = int(sys.argv[3])
for i in range(start, start + 10**6):
    if pause and i > start:
        os.fsync = announced_fsync
    for array in params.as_dict().values():
        array.fill(i)
    save_checkpoint(path, params, {}, {**meta, "epoch": i, "step": i})
"""


def check_whole(path: Path) -> int:
    """The checkpoint loads and is one write, not a mix of two: every weight equals its epoch."""
    ckpt = load_checkpoint(path)
    for name in PARAM_NAMES:
        assert (ckpt.params[name] == ckpt.epoch).all()
    return ckpt.epoch


def test_sigkill_during_checkpoint_writes_never_leaves_a_truncated_last_npz(tmp_path: Path) -> None:
    path = tmp_path / "last.npz"
    rng = random.Random(0)
    start, epochs = 1, []
    # three kills at random moments of a loop that does little but write checkpoints, and two
    # at the worst moment: the new file written, the rename not yet done
    for mode in ("random", "pause", "random", "pause", "random"):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode, str(start)],
                                stdout=subprocess.PIPE, text=True)
        if mode == "pause":
            assert proc.stdout.readline() == "in fsync\n"
        else:
            deadline = time.monotonic() + 30
            while not path.exists() or check_whole(path) < start:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
        proc.kill()
        proc.communicate(timeout=30)

        epoch = check_whole(path)
        assert epoch >= start
        if mode == "pause":  # the write in progress is lost, the one before it is intact
            assert epoch == start and list(tmp_path.glob(".last.npz.*.tmp"))
        epochs.append(epoch)
        start = epoch + 1
    assert epochs == sorted(epochs)
    # what a killed write leaves behind is a hidden temporary file, never read by anything, and
    # the next writer's first successful save deletes it: only the last killed writer's remain
    assert {p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp")} == {"last.npz"}
    assert {p.name.split(".")[3].split("-")[1] for p in tmp_path.glob(".last.npz.*.tmp")} <= {str(proc.pid)}


def test_sigkill_during_training_then_resume_finishes(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = mlp_process(*train_args(mnist_data_dir, out, "--epochs", "500", "-q"), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "last.npz").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    time.sleep(random.Random(1).uniform(0.05, 0.3))
    proc.kill()
    proc.communicate(timeout=30)

    epoch = load_checkpoint(out / "last.npz").epoch
    assert 1 <= epoch < 500
    rows = read_metrics(out)  # whole rows only: at most one epoch ahead of the checkpoint
    assert [r["epoch"] for r in rows] in (list(range(1, epoch + 1)), list(range(1, epoch + 2)))
    assert_no_nan_written(out)

    resumed = mlp("train", "--resume", str(out / "last.npz"), "--epochs", str(epoch + 1),
                  "--data-dir", str(mnist_data_dir), "-q")

    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in read_metrics(out)] == list(range(1, epoch + 2))
    assert load_checkpoint(out / "last.npz").epoch == epoch + 1


def test_ctrl_c_in_the_first_epoch_saves_a_checkpoint_to_resume_from(mnist_data_dir: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    # 200 steps of a 784-128-10 network on batches of 100 (about 0.2 s): time to be interrupted
    args = ["--data-dir", str(mnist_data_dir), "--hidden", "128", "--batch", "100",
            "--set", "data.limit=20000", "--set", "data.dev_size=1000"]
    proc = mlp_process("train", "--out", str(out), "--epochs", "2", *args, stderr=subprocess.PIPE, text=True)
    started = proc.stderr.readline()  # printed once the Ctrl-C handler is in place, before step 1
    assert started.startswith(f"training {out}"), started
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)

    assert proc.returncode == 130, rest
    line = stop_line(rest)
    assert "interrupted during epoch 1" in line and f"--resume {out / 'last.npz'}" in line
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.epoch == 0 and 1 <= ckpt.step < 200  # saved mid-epoch
    assert not (out / "metrics.jsonl").exists()

    resumed = mlp_process("train", "--resume", str(out / "last.npz"), "--epochs", "1", "-q", *args,
                          stderr=subprocess.PIPE, text=True)
    _, errors = resumed.communicate(timeout=120)

    assert resumed.returncode == 0, errors
    assert [r["step"] for r in read_metrics(out)] == [200]
    assert load_checkpoint(out / "last.npz").epoch == 1


# -- divergence -----------------------------------------------------------------------------------


def test_lr_1e6_stops_in_the_first_epoch_with_a_clear_error(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    result = mlp(*train_args(mnist_data_dir, out, "--lr", "1e6", "--epochs", "5", "-q"))

    assert result.exit_code == 1
    line = one_error_line(result)
    assert "training diverged" in line and "at epoch 1," in line and "learning rate 1e+06" in line
    assert "no checkpoint was written" in line and "try a smaller learning rate" in line
    assert not list(out.glob("*.npz"))
    assert_no_nan_written(out)


def test_lr_1e6_on_resume_keeps_the_last_good_checkpoint(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert mlp(*train_args(mnist_data_dir, out, "--epochs", "1", "-q")).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    result = mlp("train", "--resume", str(out / "last.npz"), "--lr", "1e6", "--epochs", "3",
                 "--data-dir", str(mnist_data_dir), "-q")

    assert result.exit_code == 1
    line = one_error_line(result)
    assert "at epoch 2," in line and f"the last good checkpoint is {out / 'last.npz'} (epoch 1)" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert_no_nan_written(out)


# -- the disk ----------------------------------------------------------------------------------------


NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name open files")


def train_hooking_the_second_save(
    data_dir: Path, out: Path, monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]
):
    """``mlp train`` for 3 epochs, calling ``hook`` when the second last.npz has been written to
    its temporary file and is about to be fsynced (not yet renamed into place)."""
    real_fsync = os.fsync
    saves = []

    def fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.npz."):
            saves.append(fd)
            if len(saves) == 2:
                hook()
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        return mlp(*train_args(data_dir, out, "--epochs", "3", "-q"))


@NEEDS_PROC
def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(
    mnist_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"

    def disk_full() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    result = train_hooking_the_second_save(mnist_data_dir, out, monkeypatch, disk_full)

    assert result.exit_code == 1
    assert one_error_line(result) == f"error: No space left on device: {out / 'last.npz'}"
    assert load_checkpoint(out / "last.npz").epoch == 1
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert_no_nan_written(out)

    resumed = mlp("train", "--resume", str(out / "last.npz"), "--data-dir", str(mnist_data_dir), "-q")

    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


# ``mlp train`` in a subprocess that sends itself a signal twice while the second last.npz is
# written to its temporary file, before it is renamed into place.
SIGNAL_TWICE_WHILE_SAVING = """
import os, signal, sys
real_fsync, saves, SIGNUM = os.fsync, [], int(sys.argv[1])
def fsync(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.npz."):
        saves.append(fd)
        if len(saves) == 2:
            os.kill(os.getpid(), SIGNUM)  # the first: finish the step and save...
            os.kill(os.getpid(), SIGNUM)  # ...the second: stop now
    real_fsync(fd)
os.fsync = fsync
sys.argv = ["mlp", *sys.argv[2:]]
from mlp_cli.cli import main
main()
"""


@NEEDS_PROC
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_second_signal_while_saving_stops_at_once_and_keeps_the_previous_checkpoint(
    mnist_data_dir: Path, tmp_path: Path, signum: int
) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-c", SIGNAL_TWICE_WHILE_SAVING, str(int(signum)),
               *train_args(mnist_data_dir, out, "--epochs", "3", "-q")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 128 + signum, done.stderr
    last = out / "last.npz"
    assert stop_line(done.stderr) == (  # what happened, not an "error:" line
        f"stopped at once by a second signal; the last checkpoint is {last} (epoch 1, step 20); "
        f"continue with: mlp train --resume {last}"
    )
    assert load_checkpoint(last).epoch == 1
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_read_only_run_directory_is_one_line_and_exit_1(
    mnist_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    with monkeypatch.context() as patch:
        read_only(patch, runs)
        result = mlp(*train_args(mnist_data_dir, runs / "a", "--epochs", "1"))

    assert result.exit_code == 1  # the disk is at fault, not the command line
    assert one_error_line(result) == f"error: cannot create run directory {runs / 'a'}: Read-only file system"
    assert list(runs.iterdir()) == []


def test_a_metrics_row_that_does_not_fit_on_the_disk_is_taken_back(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.jsonl"
    row = EpochMetrics(1, 10, 0.5, 0.9, 0.6, 0.88, 0.1, 1.0, 100.0, 1.0)
    append_metrics(path, row)
    before = path.read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch, pytest.raises(OSError) as caught:
        patch.setattr(os, "fsync", fsync)
        append_metrics(path, EpochMetrics(2, 20, 0.4, 0.9, 0.5, 0.89, 0.1, 1.0, 100.0, 2.0))

    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == before
    assert [r["epoch"] for r in read_metrics(path)] == [1]
    assert json.loads(before)["epoch"] == 1
