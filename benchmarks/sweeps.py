"""How fast `mlp sweep` gets through trials: ``python -m benchmarks.sweeps`` (a few minutes).

1. Trials per hour for a sweep of small trials (configs/best-30.yaml on 10,000 training images,
   2 epochs, 8 learning rates): ``--jobs 1`` (one process, the BLAS library's default threads:
   both cores; and, to see where the difference comes from, with one thread) against
   ``--jobs 2`` (two processes, one BLAS thread each). Whole commands, from
   process start to exit, alternated so that both see the same background load.
2. The per-trial cost of each executor, from trivial trials (8 hidden units, 100 images, one
   epoch): the slope of wall time against the number of trials (10 and 30), so that starting
   the pool or the cluster does not count. Local processes, a local Dask cluster, and an
   existing Dask scheduler with one worker on loopback (`dask scheduler` / `dask worker`), all
   with one trial at a time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = ["--config", "best-30", "--set", "data.limit=10000", "--set", "train.epochs=2",
         "--set", "optimizer.lr=0.02,0.03,0.05,0.07,0.1,0.14,0.2,0.3"]
TRIVIAL = ["--config", "default", "--set", "model.hidden=8", "--set", "data.limit=100", "--set", "data.dev_size=100",
           "--set", "train.batch_size=100", "--set", "train.epochs=1"]


def timed_sweep(args: list[str], workdir: Path, blas_threads: int | None = None) -> float:
    """Seconds of one whole `mlp sweep` command; BLAS threads left to the tool unless given."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    if blas_threads is not None:
        env |= {"OPENBLAS_NUM_THREADS": str(blas_threads), "OMP_NUM_THREADS": str(blas_threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlp_cli", "sweep", *args, "--out", str(out / "s"), "--quiet"],
                   check=True, env=env)
    return time.perf_counter() - start


def trials_per_hour(workdir: Path, repeats: int = 2) -> dict[str, float]:
    """--jobs 1 with the default (two) and with one BLAS thread, --jobs 2 with one each."""
    times: dict[str, list[float]] = {"jobs1": [], "jobs1_one_thread": [], "jobs2": []}
    for _ in range(repeats):
        times["jobs1"].append(timed_sweep([*SMALL, "--jobs", "1"], workdir))
        times["jobs1_one_thread"].append(timed_sweep([*SMALL, "--jobs", "1"], workdir, blas_threads=1))
        times["jobs2"].append(timed_sweep([*SMALL, "--jobs", "2"], workdir))
    return {name: 8 * 3600 / statistics.median(t) for name, t in times.items()} | {
        f"{name}_seconds": statistics.median(t) for name, t in times.items()}


def seeds(n: int) -> list[str]:
    return ["--set", "train.seed=" + ",".join(str(i) for i in range(n))]


def per_trial(workdir: Path, executor: list[str]) -> float:
    """Seconds per trivial trial: (time of 30 - time of 10) / 20."""
    few = timed_sweep([*TRIVIAL, *seeds(10), *executor], workdir)
    many = timed_sweep([*TRIVIAL, *seeds(30), *executor], workdir)
    return (many - few) / 20


def external_cluster(workdir: Path) -> tuple[str, list[subprocess.Popen]]:
    scheduler_file = workdir / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)], **quiet)]  # type: ignore[call-overload]
    processes.append(subprocess.Popen([*dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                       "--no-dashboard"], **quiet))  # type: ignore[call-overload]
    while True:  # the scheduler writes the file once it is up (a read may catch it half written)
        try:
            address = str(json.loads(scheduler_file.read_text())["address"])
            break
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    time.sleep(3)  # the worker registers
    return address, processes


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rate = trials_per_hour(workdir)
        overhead = {"local": per_trial(workdir, ["--jobs", "1"]),
                    "dask-local": per_trial(workdir, ["--executor", "dask", "--jobs", "1"])}
        address, processes = external_cluster(workdir)
        try:
            overhead["dask-scheduler"] = per_trial(workdir, ["--executor", "dask", "--scheduler", address])
        finally:
            for process in processes:
                process.terminate()
                process.wait()
    print(json.dumps({"trials_per_hour": rate, "seconds_per_trivial_trial": overhead}, indent=1))


if __name__ == "__main__":
    main()
