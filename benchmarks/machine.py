"""What machine a benchmark ran on, and whether anything else was using it at the time.

On a small machine (the reference has 2 cores) any other busy process stalls a 2-thread BLAS
call for a whole scheduler slice, so a timing taken while something else runs is worthless.
:class:`LoadMeter` measures, for one timed section, how much CPU time *other* processes used
(all CPU time from ``/proc/stat`` minus this process's own); the benchmarks repeat a section that
was disturbed and wait for a quiet machine before they start.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Any

# A timed section is "disturbed" when other processes used more than this fraction of one core.
BUSY_LIMIT = 0.05
# Smoke mode (CI) only checks that every part runs: it never waits for a quiet machine.
NEVER_WAIT = False


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


_HZ = _ticks_per_second()


def _system_busy_seconds() -> float | None:
    """CPU seconds spent by everything (all cores, not idle) since boot, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / _HZ


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Load:
    wall: float  # seconds
    foreign: float | None  # CPU-seconds used by other processes during the section

    @property
    def foreign_cores(self) -> float | None:
        """Other processes' average load during the section, in cores (None when unknown)."""
        if self.foreign is None or self.wall <= 0:
            return None
        return max(0.0, self.foreign / self.wall)

    @property
    def disturbed(self) -> bool:
        cores = self.foreign_cores
        return cores is not None and cores > BUSY_LIMIT


def _process_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` (all its threads), 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _HZ  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


class LoadMeter:
    """``with LoadMeter() as m: ...`` then ``m.load``: wall time and other processes' CPU use.

    ``helpers``: process ids whose CPU time counts as this process's own (worker processes
    doing the measured work). The sampling is coarse (clock ticks, 10 ms), so sections shorter
    than ~0.2 s carry little information; the benchmarks meter whole epochs or processes.
    """

    def __init__(self, helpers: tuple[int, ...] = ()) -> None:
        self.helpers = helpers

    def _own(self) -> float:
        return _own_cpu_seconds() + sum(_process_cpu_seconds(pid) for pid in self.helpers)

    def __enter__(self) -> LoadMeter:
        self._busy0 = _system_busy_seconds()
        self._own0 = self._own()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t0
        busy1, own1 = _system_busy_seconds(), self._own()
        foreign = None
        if self._busy0 is not None and busy1 is not None:
            # One tick of slack per core: /proc/stat and os.times round differently.
            slack = 2.0 * (os.cpu_count() or 1) / _HZ
            foreign = max(0.0, (busy1 - self._busy0) - (own1 - self._own0) - slack)
        self.load = Load(wall, foreign)


def foreign_load(seconds: float = 0.5) -> float | None:
    """Other processes' load in cores over the next ``seconds`` (this process sleeps)."""
    with LoadMeter() as meter:
        time.sleep(seconds)
    return meter.load.foreign_cores


def wait_for_quiet(max_wait: float = 300.0, quiet_for: float = 2.0, log: Any = None) -> float:
    """Sleep until other processes have used under BUSY_LIMIT cores for ``quiet_for`` seconds
    (or ``max_wait`` passed). Returns the seconds waited."""
    start = time.perf_counter()
    announced = False
    if NEVER_WAIT:
        return 0.0
    while time.perf_counter() - start < max_wait:
        load = foreign_load(quiet_for)
        if load is None or load <= BUSY_LIMIT:
            return time.perf_counter() - start
        if log and not announced:
            log(f"waiting for a quiet machine (other processes use {load:.2f} cores) ...")
            announced = True
    if log:
        log(f"machine still busy after {max_wait:.0f} s; measuring anyway (results flagged)")
    return time.perf_counter() - start


def uptime_load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process (threadpoolctl, when installed)."""
    try:
        import threadpoolctl
    except ImportError:
        return [{"note": "threadpoolctl not installed; pip install threadpoolctl to see the BLAS kernel"}]
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer")
    return [{k: info.get(k) for k in keep} for info in threadpoolctl.threadpool_info()]


def numpy_blas_threads() -> int:
    """The thread count numpy's BLAS uses (its default unless someone changed it)."""
    try:
        import threadpoolctl
    except ImportError:
        return os.cpu_count() or 1
    for info in threadpoolctl.threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in str(info.get("filepath", "")):
            return int(info["num_threads"])
    return os.cpu_count() or 1


def describe() -> dict[str, Any]:
    """Machine, libraries and environment, recorded with every result file."""
    import numpy as np

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "GOTO"))},
        "loadavg_at_start": uptime_load(),
        "kernels": _kernels(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_blas"] = _torch_blas(torch)
    except ImportError:
        info["torch"] = None
    return info


def _kernels() -> dict[str, Any]:
    """The step's kernels picked in this process (nn.fused, the sigmoid's form) and its elementwise threads."""
    from mlp_cli.nn import fused, parallel
    from mlp_cli.nn.backprop import sigmoid_form

    return {"optimizer_updates": fused.kernel_name(), "sigmoid": sigmoid_form(),
            "elementwise_threads": parallel.threads(), "blas_threads": numpy_blas_threads()}


def _torch_blas(torch: Any) -> str:
    try:
        config = torch.__config__.show()
    except Exception:  # noqa: BLE001  (informational only)
        return "unknown"
    for line in config.splitlines():
        if "BLAS_INFO" in line or "USE_MKL" in line:
            return line.strip()
    return "unknown"
