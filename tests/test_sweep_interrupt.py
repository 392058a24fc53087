"""Ctrl-C during a sweep (a real SIGINT to a real `mlp sweep` process): every running trial saves
its checkpoint, the sweep exits 130, and the same command run again resumes them to the very
numbers of a sweep that was never interrupted. A batch scheduler's SIGTERM and a closed terminal's
SIGHUP go through the same stop handler as `mlp train`'s: exit 143 and 129."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.stop_signals import StopExit
from mlp_cli.sweeps.records import read_trials
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.metrics import read_metrics

# Two trials of about a second each, 200 steps per epoch: long enough to stop in the middle.
ARGS = ["sweep", "--config", "default", "--set", "model.hidden=32", "--set", "data.limit=10000",
        "--set", "data.dev_size=1000", "--set", "train.batch_size=50", "--set", "train.epochs=6",
        "--set", "optimizer.name=momentum", "--set", "optimizer.lr=0.05,0.1", "--jobs", "2"]
TRIALS = ("000-lr=0.05", "001-lr=0.1")
TIMING = ("seconds", "examples_per_second", "elapsed")


def signal_mid_sweep(out: Path, data_dir: Path, signum: int, args: list[str] = ARGS) -> tuple[int, str]:
    """Start a real `mlp sweep`, send it ``signum`` once every trial has saved a checkpoint (to
    the sweep only: it tells its trials); its exit code and stderr."""
    command = [sys.executable, "-m", "mlp_cli", *args, "--data-dir", str(data_dir), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "NO_COLOR": "1"})
    try:
        deadline = time.monotonic() + 60
        while not all((out / "trials" / t / "last.npz").exists() for t in TRIALS):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)  # polling for the files: the signal goes when they are there
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


def trials_interrupted(out: Path, epochs: int) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
    """Every trial recorded interrupted, stopped part-way: the epoch of each one's last.npz, and
    each one's metrics so far."""
    rows = read_trials(out)
    assert sorted(r["trial"] for r in rows) == list(TRIALS)
    assert {r["status"] for r in rows} == {"interrupted"}, rows
    stopped = {t: load_checkpoint(out / "trials" / t / "last.npz").epoch for t in TRIALS}
    assert all(0 < epoch < epochs for epoch in stopped.values())
    return stopped, {t: read_metrics(out / "trials" / t) for t in TRIALS}


def rerun_to_the_end(args: list[str], data_dir: Path, out: Path) -> None:
    """The same command again: every trial ends ok."""
    resumed = runner.invoke(app, [*args, "--data-dir", str(data_dir), "--out", str(out), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert {r["status"] for r in json.loads(resumed.stdout)["trials"]} == {"ok"}


def test_ctrl_c_saves_every_trial_and_the_same_command_resumes_bit_identically(mnist_data_dir: Path,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    returncode, stderr = signal_mid_sweep(out, mnist_data_dir, signal.SIGINT)
    assert returncode == 130, stderr
    assert "run the same command again" in stderr and "Traceback" not in stderr
    stopped, before = trials_interrupted(out, epochs=6)

    rerun_to_the_end(ARGS, mnist_data_dir, out)
    reference = runner.invoke(app, [*ARGS, "--data-dir", str(mnist_data_dir), "--out", str(tmp_path / "ref"), "-q"])
    assert reference.exit_code == 0, reference.output
    for trial in TRIALS:
        got = load_checkpoint(out / "trials" / trial / "last.npz")
        want = load_checkpoint(tmp_path / "ref" / "trials" / trial / "last.npz")
        assert got.epoch == want.epoch == 6
        for name in ("W1", "b1", "W2", "b2"):
            np.testing.assert_array_equal(got.params[name], want.params[name])
        rows_got, rows_want = read_metrics(out / "trials" / trial), read_metrics(tmp_path / "ref" / "trials" / trial)
        strip = [{k: v for k, v in r.items() if k not in TIMING} for r in rows_got]
        assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in rows_want]
        assert rows_got[: stopped[trial]] == before[trial][: stopped[trial]]  # resumed, not retrained: same timings


# 20 epochs: neither trial ends before the other has saved its first checkpoint, on a busy machine too.
LONGER = [*ARGS, "--set", "train.epochs=20"]


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_a_sweep_like_ctrl_c(mnist_data_dir: Path, tmp_path: Path, name: str) -> None:
    """The signals a batch scheduler or a closed terminal send: each trial saves and is recorded
    interrupted, one line says how to continue, the exit code is 128 + the signal's number, and
    the same command run again resumes the trials (their finished epochs are kept, not retrained)."""
    signum = getattr(signal, name)
    out = tmp_path / "sweep"
    returncode, stderr = signal_mid_sweep(out, mnist_data_dir, signum, LONGER)

    assert returncode == StopExit[name] == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "run the same command again" in line] == [
        f"error: sweep interrupted; running trials saved their checkpoints in {out}; run the same command again to "
        "continue"], stderr
    stopped, before = trials_interrupted(out, epochs=20)

    rerun_to_the_end(LONGER, mnist_data_dir, out)
    for trial in TRIALS:
        assert load_checkpoint(out / "trials" / trial / "last.npz").epoch == 20
        assert read_metrics(out / "trials" / trial)[: stopped[trial]] == before[trial][: stopped[trial]]


def test_each_stop_exit_code_is_128_plus_its_signal() -> None:
    for member in StopExit:
        if hasattr(signal, member.name):
            assert member == 128 + getattr(signal, member.name) and StopExit.of(getattr(signal, member.name)) is member
