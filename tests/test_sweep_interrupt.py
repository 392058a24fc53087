"""Ctrl-C during a sweep (a real SIGINT to a real `mlp sweep` process): every running trial saves
its checkpoint, the sweep exits 130, and the same command run again resumes them to the very
numbers of a sweep that was never interrupted. A batch scheduler's SIGTERM and a closed terminal's
SIGHUP go through the same stop handler as `mlp train`'s: exit 143 and 129.

Deterministic: the trials cannot finish (100,000 epochs), and each stop waits for what the trials
wrote (their checkpoints, their epochs), so a busy machine makes the test slower, never wrong."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import signal_sweep, trial_epochs

from mlp_cli.stop_signals import StopExit
from mlp_cli.sweeps.records import read_trials
from mlp_cli.training.checkpoint import load_checkpoint

# Two trials that cannot finish (100,000 epochs of 200 steps): whenever the stop comes, both are
# still training. Every stop is triggered by what the trials have written, never by a clock.
ARGS = ["sweep", "--config", "default", "--set", "model.hidden=32", "--set", "data.limit=10000",
        "--set", "data.dev_size=1000", "--set", "train.batch_size=50", "--set", "train.epochs=100000",
        "--set", "optimizer.name=momentum", "--set", "optimizer.lr=0.05,0.1", "--jobs", "2"]
TRIALS = ("000-lr=0.05", "001-lr=0.1")
TIMING = ("seconds", "examples_per_second", "elapsed")


def interrupted_sweep(data_dir: Path, out: Path, ready: Callable[[], bool], signum: int = signal.SIGINT) -> str:
    """Run the sweep into ``out``, send it ``signum`` once ``ready()``, and return its stderr (exit
    128 + signum)."""
    returncode, stderr = signal_sweep([*ARGS, "--data-dir", str(data_dir), "--out", str(out)], ready, signum)
    assert returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "run the same command again" in line] == [
        f"sweep interrupted; running trials saved their checkpoints in {out}; run the same command again to "
        "continue"], stderr
    return stderr


def test_ctrl_c_saves_every_trial_and_the_same_command_resumes_bit_identically(mnist_data_dir: Path,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    interrupted_sweep(mnist_data_dir, out, lambda: all((out / "trials" / t / "last.npz").exists() for t in TRIALS))
    rows = read_trials(out)
    assert sorted(r["trial"] for r in rows) == list(TRIALS)
    assert {r["status"] for r in rows} == {"interrupted"}
    stopped = {t: load_checkpoint(out / "trials" / t / "last.npz").epoch for t in TRIALS}
    assert all(epoch >= 1 for epoch in stopped.values())
    before = {t: trial_epochs(out, t) for t in TRIALS}

    # The same command again resumes each trial; stopped again two epochs later.
    interrupted_sweep(mnist_data_dir, out, lambda: all(len(trial_epochs(out, t)) >= stopped[t] + 2 for t in TRIALS))
    resumed = {t: trial_epochs(out, t) for t in TRIALS}
    assert [r["status"] for r in read_trials(out)] == ["interrupted"] * 4
    # A sweep never interrupted, stopped once it is as far: the same numbers, epoch by epoch.
    reference = tmp_path / "ref"
    interrupted_sweep(mnist_data_dir, reference, lambda: all(len(trial_epochs(reference, t)) >= len(resumed[t])
                                                             for t in TRIALS))
    for trial in TRIALS:
        got, want = resumed[trial], trial_epochs(reference, trial)[: len(resumed[trial])]
        assert [r["epoch"] for r in got] == list(range(1, len(got) + 1))
        assert [_untimed(r) for r in got] == [_untimed(r) for r in want]
        assert got[: stopped[trial]] == before[trial][: stopped[trial]]  # resumed, not retrained: same timings


def _untimed(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in TIMING}


def all_saved(out: Path) -> Callable[[], bool]:
    return lambda: all((out / "trials" / t / "last.npz").exists() for t in TRIALS)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_a_sweep_like_ctrl_c(mnist_data_dir: Path, tmp_path: Path, name: str) -> None:
    """The signals a batch scheduler or a closed terminal send: each trial saves and is recorded
    interrupted, one line says how to continue, the exit code is 128 + the signal's number, and
    the same command run again resumes the trials (their finished epochs are kept, not retrained)."""
    signum = getattr(signal, name)
    assert StopExit[name] == 128 + signum
    out = tmp_path / "sweep"
    interrupted_sweep(mnist_data_dir, out, all_saved(out), signum)
    assert {r["status"] for r in read_trials(out)} == {"interrupted"}
    stopped = {t: load_checkpoint(out / "trials" / t / "last.npz").epoch for t in TRIALS}
    before = {t: trial_epochs(out, t) for t in TRIALS}

    interrupted_sweep(mnist_data_dir, out, lambda: all(len(trial_epochs(out, t)) > stopped[t] for t in TRIALS))
    for trial in TRIALS:
        assert trial_epochs(out, trial)[: stopped[trial]] == before[trial][: stopped[trial]]


def test_each_stop_exit_code_is_128_plus_its_signal() -> None:
    for member in StopExit:
        if hasattr(signal, member.name):
            assert member == 128 + getattr(signal, member.name) and StopExit.of(getattr(signal, member.name)) is member
