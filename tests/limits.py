"""Running a command as a hostile input would meet it: in a child process under resource limits.

``run_limited`` caps the child's address space (RLIMIT_AS), the size of any file it writes
(RLIMIT_FSIZE) and its CPU time (RLIMIT_CPU), and kills it after ``seconds`` of wall time. It
returns what the child printed, its exit code, the wall time and the child's peak resident
memory (from ``wait4``), so a test can assert that the input cost little, not only that it
was refused.

The peak is measured by a small launcher between the suite and the command: Linux keeps in a
process's peak the resident set of the memory it had before ``exec``, and a child forked from
pytest starts with a copy of pytest's (some hundreds of MB late in the suite, with onnxruntime
and TensorBoard's reader loaded). The launcher is a fresh Python of a few MB that forks and
execs the command and reports the command's own peak; its exit status is the command's.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 1 << 30
MiB = 1 << 20
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# argv: the file for the command's peak (KiB), then the command. A signal that ends the command
# ends the launcher the same way, so the exit status reads as the command's.
LAUNCHER = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
if code < 0:
    if -code not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
os._exit(code)
"""


@dataclass
class Outcome:
    code: int  # the exit status; -N when killed by signal N
    stdout: str
    stderr: str
    seconds: float
    peak_mib: float  # the child's peak resident set
    killed: bool  # killed for running past the wall-clock limit

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def error_line(self) -> str:
        """The one line on stderr (asserting there is exactly one and no traceback)."""
        assert "Traceback" not in self.output, self.output[-3000:]
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr[-3000:]
        return lines[0]


def mlp_command(*args: Any) -> list[str]:
    return [sys.executable, "-m", "mlp_cli", *(str(a) for a in args)]


def python_command(code: str, *args: Any) -> list[str]:
    return [sys.executable, "-c", code, *(str(a) for a in args)]


def run_limited(
    command: list[str],
    *,
    memory: int = 2 * GiB,
    file_size: int = 256 * MiB,
    seconds: float = 60.0,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run ``command`` under the limits; never raises for what the child does."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        cpu = int(seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        os.setsid()  # its own group, so a timeout can end the children it started too

    started = time.monotonic()
    peak_file = Path(tempfile.gettempdir()) / f"mlp-peak-{os.getpid()}-{threading.get_ident()}-{started}"
    child = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(peak_file), *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        env={**os.environ, **ONE_BLAS_THREAD, **(env or {})}, preexec_fn=limit,  # noqa: PLW1509
    )
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(seconds, kill)
    timer.start()
    stdout_text, stderr_text = _read_both(child)
    _, status, _ = os.wait4(child.pid, 0)
    timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    try:
        peak_kib = int(peak_file.read_text())
        peak_file.unlink()
    except (OSError, ValueError):  # the launcher was killed before the command ended (a timeout)
        peak_kib = 0
    return Outcome(
        code=child.returncode, stdout=stdout_text, stderr=stderr_text,
        seconds=time.monotonic() - started, peak_mib=peak_kib / 1024, killed=killed.is_set(),
    )


def _read_both(child: subprocess.Popen) -> tuple[str, str]:
    """Both pipes read to the end at once (one alone could fill and block the child)."""
    texts = {"out": "", "err": ""}

    def drain(name: str, stream: Any) -> None:
        texts[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(name, stream), daemon=True)
               for name, stream in (("out", child.stdout), ("err", child.stderr))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return texts["out"], texts["err"]
