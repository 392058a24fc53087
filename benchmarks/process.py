"""Whole-process measurements: start-up, ``mlp eval``, end-to-end training, peak memory.

Every command runs as a child of benchmarks/launch.py, which reports the child's wall time
(start to exit) and its own peak resident set size (``os.wait4``), with
``PYTHONDONTWRITEBYTECODE`` removed from its environment so that it runs as an installed user's
would (bytecode cached after the first run, which is a warm-up and not counted).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.machine import LoadMeter, wait_for_quiet

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ProcessRun:
    command: list[str]
    wall: float  # seconds, process start to exit
    max_rss_mb: float
    returncode: int
    output: str  # stdout and stderr, the tail
    foreign_cores: float | None
    started_at: float  # time.time() just before the start

    @property
    def disturbed(self) -> bool:
        return self.foreign_cores is not None and self.foreign_cores > 0.05

    def to_dict(self) -> dict[str, Any]:
        return {"wall": round(self.wall, 4), "max_rss_mb": round(self.max_rss_mb, 1),
                "returncode": self.returncode, "foreign_cores": self.foreign_cores}


def user_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def mlp_command() -> list[str]:
    """The installed ``mlp`` script next to this interpreter, else ``python -m mlp_cli``."""
    script = Path(sys.executable).parent / "mlp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlp_cli"]


def run_process(command: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> ProcessRun:
    """Run ``command`` to completion through benchmarks/launch.py: its wall time (start to exit),
    its own peak RSS, its output (stdout and stderr together)."""
    with tempfile.TemporaryDirectory(prefix="mlp-bench-run-") as tmp:
        result_file = Path(tmp) / "result.json"
        sink_path = Path(tmp) / "output"
        launcher = [sys.executable, "-m", "benchmarks.launch", str(result_file), "--", *command]
        launcher_env = dict(env or user_env())
        launcher_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), launcher_env.get("PYTHONPATH")]))
        with sink_path.open("wb") as sink, LoadMeter() as meter:
            started_at = time.time()
            done = subprocess.run(launcher, cwd=cwd or REPO_ROOT, env=launcher_env, stdout=sink,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
        output = sink_path.read_bytes().decode("utf-8", errors="replace")
        if done.returncode != 0 or not result_file.exists():
            raise RuntimeError(f"launcher failed ({done.returncode}) for {' '.join(command)}:\n{output[-4000:]}")
        result = json.loads(result_file.read_text(encoding="utf-8"))
    return ProcessRun(list(command), result["wall"], result["max_rss_kb"] / 1024, result["returncode"],
                      output[-4000:], meter.load.foreign_cores, started_at)


def checked(run: ProcessRun) -> ProcessRun:
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(run.command)} exited with {run.returncode}:\n{run.output}")
    return run


def repeat_process(
    command: Sequence[str], repeats: int, *, warmup: int = 1, log: Callable[[str], None] | None = None,
    max_wait: float = 120.0,
) -> dict[str, Any]:
    """Median wall time (and peak RSS) of ``repeats`` runs after ``warmup`` uncounted ones;
    a run disturbed by other processes is repeated (up to 3 times)."""
    for _ in range(warmup):
        checked(run_process(command))
    runs: list[ProcessRun] = []
    retries = 0
    for _ in range(repeats):
        for attempt in range(4):
            run = checked(run_process(command))
            if not run.disturbed or attempt == 3:
                break
            retries += 1
            wait_for_quiet(max_wait=max_wait, log=log)
        runs.append(run)
    return {
        "median": statistics.median(r.wall for r in runs),
        "samples": [round(r.wall, 4) for r in runs],
        "max_rss_mb": max(r.max_rss_mb for r in runs),
        "disturbed_retries": retries,
    }
