"""A Dask sweep whose cluster goes away ends with one line and a record to resume from: a real
`dask scheduler` killed by its PID mid-sweep, a scheduler without workers, and an address that is
not one. Each waits on events (a row in trials.jsonl, the scheduler file), not on the clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.sweeps.records import read_trials

DASK = [sys.executable, "-m", "dask"]
# Four trials of several seconds each on one single-threaded worker: they run one after another.
SWEEP = ["sweep", "--config", "default", "--set", "model.hidden=32", "--set", "data.limit=5000",
         "--set", "data.dev_size=1000", "--set", "train.batch_size=50", "--set", "train.epochs=40",
         "--set", "train.seed=0,1,2,3", "--executor", "dask", "--json"]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A `dask scheduler` on loopback and its address, read from the file it writes when up."""
    scheduler_file = tmp_path / "scheduler.json"
    process = subprocess.Popen([*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                "--scheduler-file", str(scheduler_file)], stdout=subprocess.DEVNULL,
                               stderr=open(tmp_path / "scheduler.log", "w"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                address = str(json.loads(scheduler_file.read_text())["address"])
                break
            except (OSError, ValueError, KeyError):  # not there yet, or half written
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
                time.sleep(0.05)
        yield process, address
    finally:
        stop(process)


def start_sweep(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlp_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            start_new_session=True)


def finish(sweep: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        return sweep.communicate(timeout=timeout)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)


def test_killing_the_scheduler_mid_sweep_records_every_unfinished_trial(
    scheduler: tuple[subprocess.Popen, str], mnist_data_dir: Path, offline_mnist_url: str, tmp_path: Path
) -> None:
    process, address = scheduler
    worker = subprocess.Popen(
        [*DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--death-timeout", "60",
         "--local-directory", str(tmp_path / "worker")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLP_DATA_DIR": str(mnist_data_dir), "OPENBLAS_NUM_THREADS": "1"})
    out = tmp_path / "sweep"
    try:
        sweep = start_sweep(*SWEEP, "--scheduler", address, "--mirror", offline_mnist_url, "--out", out)
        deadline = time.monotonic() + 120
        while not (out / "trials.jsonl").exists() or not read_trials(out):  # the first trial is in
            assert sweep.poll() is None and time.monotonic() < deadline, finish(sweep)
            time.sleep(0.02)
        process.kill()  # the scheduler, by its PID, while the second trial runs
        stdout, stderr = finish(sweep)
    finally:
        stop(worker)
    assert sweep.returncode == 1 and "Traceback" not in stderr, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"error: the Dask scheduler at {address} was lost; 3 unfinished trials recorded as "
                           f"interrupted in {out}; run the same command again to continue"), line
    rows = read_trials(out)
    assert sorted(r["trial"] for r in rows) == sorted(f"{i:03d}-seed={i}" for i in range(4))
    assert [r["status"] for r in rows] == ["ok", "interrupted", "interrupted", "interrupted"]
    assert all("was lost before the trial finished" in r["error"] for r in rows[1:])
    table, error = map(json.loads, stdout.splitlines())  # --json: the table, then the error as JSON
    assert [r["status"] for r in table["trials"]] == ["ok"] + ["interrupted"] * 3 and error["exit_code"] == 1


def test_a_scheduler_without_workers_ends_the_sweep_after_the_timeout(
    scheduler: tuple[subprocess.Popen, str], offline_mnist_url: str, tmp_path: Path
) -> None:
    _, address = scheduler
    out = tmp_path / "sweep"
    sweep = start_sweep(*SWEEP, "--scheduler", address, "--no-workers-timeout", "2", "--out", out)
    _, stderr = finish(sweep, timeout=60)
    assert sweep.returncode == 1 and "Traceback" not in stderr, stderr
    (line,) = stderr.strip().splitlines()
    assert f"the Dask cluster at {address} has had no workers for 2 s; 4 unfinished trials" in line
    assert [r["status"] for r in read_trials(out)] == ["interrupted"] * 4


@pytest.mark.parametrize("address", ["tcp://", "tcp://host:port", "not an address", "http://[zz", ""])
def test_a_malformed_scheduler_address_is_a_usage_error(address: str, tmp_path: Path) -> None:
    result = runner.invoke(app, [*SWEEP, "--scheduler", address, "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "is not a Dask address" in result.stderr and not (tmp_path / "s").exists()


@pytest.mark.parametrize(("signum", "extra"), [(signal.SIGTERM, ()), (signal.SIGINT, ()),
                                               (signal.SIGTERM, ("--prune", "halving"))],
                         ids=["SIGTERM", "SIGINT", "pruned"])
def test_a_stop_while_no_worker_ever_joined_ends_the_sweep_at_once(
    scheduler: tuple[subprocess.Popen, str], tmp_path: Path, signum: int, extra: tuple[str, ...]
) -> None:
    """The stop goes once the scheduler holds the sweep's trials (none can start: no worker; a
    pruned sweep submits one per worker it knows of, so one); the sweep ends then, its trials
    cancelled and not recorded (never started), not after the no-workers timeout."""
    import distributed

    _, address = scheduler
    out = tmp_path / "sweep"
    sweep = start_sweep(*SWEEP, *extra, "--scheduler", address, "--no-workers-timeout", "600", "--out", out)
    submitted = 1 if extra else 4
    try:
        with distributed.Client(address, timeout=30) as client:
            deadline = time.monotonic() + 60  # a bound on a broken sweep, not a step of the test
            while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) < submitted:
                assert sweep.poll() is None and time.monotonic() < deadline, finish(sweep, timeout=1)
                time.sleep(0.05)
        os.killpg(sweep.pid, signum)
        _, stderr = finish(sweep, timeout=60)  # the timeout is 600 s: a sweep that waits for it fails here
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 128 + signum and "Traceback" not in stderr, stderr
    assert "run the same command again to continue" in stderr
    assert read_trials(out) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "dask", "--no-workers-timeout", "nan"], "--no-workers-timeout nan; expected a number of seconds"),
    (["--executor", "dask", "--no-workers-timeout", "inf"], "--no-workers-timeout inf; expected a number of seconds"),
    (["--no-workers-timeout", "1"], "--no-workers-timeout goes with --executor dask"),
    (["--no-workers-timeout", "300"], "--no-workers-timeout goes with --executor dask"),
])
def test_a_no_workers_timeout_that_would_do_nothing_is_a_usage_error(tmp_path: Path, args: list[str],
                                                                     message: str) -> None:
    result = runner.invoke(app, ["sweep", "tiny", "--dry-run", "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
