"""Sweeps on a real Dask cluster on loopback: a `dask scheduler` and two `dask worker` processes,
each worker with its own dataset cache (no shared filesystem with the client). Trials run on
both workers; killing one mid-sweep reruns its trial on the other and records the retry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import distributed  # the dask extra, which `make setup` installs
import pytest
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.sweeps.records import read_trials

# Eight trials of about a second each (100 steps per epoch, 4 epochs).
SWEEP = ["sweep", "--config", "default", "--set", "model.hidden=32", "--set", "data.limit=5000",
         "--set", "data.dev_size=1000", "--set", "train.batch_size=50", "--set", "train.epochs=4",
         "--set", "train.seed=0,1,2,3,4,5,6,7", "--executor", "dask"]


@dataclass
class Cluster:
    address: str
    workers: dict[str, subprocess.Popen]
    caches: dict[str, Path]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A scheduler and two single-threaded workers (no nanny: a killed worker stays dead)."""
    dask = [sys.executable, "-m", "dask"]
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = [subprocess.Popen(
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)], stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler", "w"))]
    workers, caches = {}, {}
    try:
        for name in ("w1", "w2"):
            caches[name] = tmp_path / f"cache-{name}"
            env = {**os.environ, "MLP_DATA_DIR": str(caches[name]), "OPENBLAS_NUM_THREADS": "1"}
            workers[name] = subprocess.Popen(
                [*dask, "worker", "--scheduler-file", str(scheduler_file), "--name", name, "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", "--death-timeout", "30", "--local-directory", str(tmp_path / name)],
                env=env, stdout=subprocess.DEVNULL, stderr=open(logs / name, "w"))
            processes.append(workers[name])
        deadline = time.monotonic() + 30
        while (address := _address(scheduler_file)) is None:  # the scheduler writes the file when it is up
            assert time.monotonic() < deadline, (logs / "scheduler").read_text()
            time.sleep(0.05)
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=30)
        yield Cluster(address, workers, caches)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()


def _address(scheduler_file: Path) -> str | None:
    try:
        return str(json.loads(scheduler_file.read_text())["address"])
    except (OSError, ValueError, KeyError):  # not there yet, or half written
        return None


def starts(client: distributed.Client) -> list[str]:
    """Where each trial attempt of any sweep started, from the events the trials log."""
    events = client.get_events()
    return [m["where"] for topic, logged in events.items() if topic.startswith("mlp-trials-")
            for _, m in logged]


def test_a_sweep_on_two_workers_survives_losing_one(cluster: Cluster, offline_mnist_url: str, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result: list = []
    args = [*SWEEP, "--scheduler", cluster.address, "--mirror", offline_mnist_url, "--out", str(out), "--json"]
    thread = threading.Thread(target=lambda: result.append(runner.invoke(app, args)))
    thread.start()
    with distributed.Client(cluster.address, timeout=30) as client:
        deadline = time.monotonic() + 60
        def w2_busy_after_one_delivered() -> bool:  # a trial of w2 is in the sweep; w2 runs another
            delivered = sum("w2" in row["where"] for row in read_trials(out))
            return delivered >= 1 and sum("w2" in where for where in starts(client)) > delivered

        while not w2_busy_after_one_delivered():
            assert thread.is_alive() and time.monotonic() < deadline, result and result[0].output
            time.sleep(0.02)
        cluster.workers["w2"].kill()  # mid-trial
        thread.join(timeout=90)
    assert not thread.is_alive()
    (invoked,) = result
    assert invoked.exit_code == 0, invoked.output
    rows = json.loads(invoked.stdout)["trials"]
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    where = [r["where"] for r in rows]
    assert any("w1" in w for w in where) and any("w2" in w for w in where)
    retried = [r for r in rows if r.get("attempts", 1) > 1]
    assert len(retried) == 1, rows
    assert "w2" in retried[0]["tried_on"][0] and "w1" in retried[0]["where"]
    assert retried[0]["trial"] in {r["trial"] for r in read_trials(out) if r.get("attempts") == 2}
    for trial in rows:  # the client wrote every trial's files; the workers wrote nothing here
        assert {p.name for p in (out / "trials" / trial["trial"]).iterdir()} == {
            "config.yaml", "metrics.jsonl", "last.npz", "best.npz"}
    for cache in cluster.caches.values():  # each worker fetched and verified MNIST for itself
        assert (cache / "mnist" / "train-images.npy").is_file()


def test_ctrl_c_on_a_local_dask_cluster_brings_every_trial_back_to_resume(
    mnist_data_dir: Path, offline_mnist_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A terminal's Ctrl-C reaches the whole process group, the cluster's workers included: they
    keep running, each trial saves its checkpoint and ships it back, and the same command resumes."""
    from mlp_cli.training.metrics import read_metrics

    out = tmp_path / "sweep"
    args = ["sweep", "--config", "default", "--set", "model.hidden=64", "--set", "data.limit=10000",
            "--set", "data.dev_size=1000", "--set", "train.batch_size=50", "--set", "train.epochs=40",
            "--set", "optimizer.lr=0.05,0.1", "--executor", "dask", "--jobs", "2", "--mirror", offline_mnist_url,
            "--out", str(out)]
    # The workers train each trial in a temporary directory (mlp-trial-*) under their TMPDIR: the
    # signal goes once both trials have finished an epoch there, whatever the machine's speed.
    scratch = tmp_path / "workers-tmp"
    scratch.mkdir()
    env = {**os.environ, "MLP_DATA_DIR": str(mnist_data_dir), "TMPDIR": str(scratch)}  # MNIST is in that cache
    process = subprocess.Popen([sys.executable, "-m", "mlp_cli", *args], stderr=subprocess.PIPE, text=True,
                               stdout=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 300  # a bound on a broken sweep, not a step of the test
        while len([m for m in scratch.glob("mlp-trial-*/metrics.jsonl") if _epochs_in(m) >= 1]) < 2:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "run the same command again" in stderr
    assert "running 2 on a local Dask cluster" in stderr
    rows = read_trials(out)
    assert len(rows) == 2 and {r["status"] for r in rows} <= {"interrupted", "ok"}, rows
    stopped = [r["trial"] for r in rows if r["status"] == "interrupted"]
    assert stopped, "a trial should have been running"  # (a very fast machine may finish one)
    before = {t: read_metrics(out / "trials" / t) for t in stopped}
    assert all(0 < len(r) < 40 for r in before.values())  # stopped mid-run, after an epoch
    assert all((out / "trials" / t / "last.npz").is_file() for t in before)

    monkeypatch.setenv("MLP_DATA_DIR", str(mnist_data_dir))
    again = runner.invoke(app, [*args, "--json", "--quiet"])
    assert again.exit_code == 0, again.output
    assert {r["status"] for r in json.loads(again.stdout)["trials"]} == {"ok"}
    for trial, rows_before in before.items():
        after = read_metrics(out / "trials" / trial)
        assert [r["epoch"] for r in after] == list(range(1, 41))
        assert after[: len(rows_before)] == rows_before  # continued from the shipped checkpoint


def _epochs_in(metrics: Path) -> int:
    """Complete rows in a trial's metrics.jsonl (0 while it is being created or written)."""
    try:
        return metrics.read_bytes().count(b"\n")
    except OSError:
        return 0
