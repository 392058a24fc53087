"""The run directory: where it is, that it is free, and that one process at a time writes it.

A new run goes to ``run.dir`` (``--out``) or ``runs/<run.name or config-timestamp>``; a directory
that already holds a run is never reused without ``--overwrite``. Whoever trains into a run
directory holds its lock (``.lock``, a ``filelock`` lock, which the operating system releases
when the process ends, however it ends) for the whole run, and says who it is in ``.writer``, so
that a second writer is refused at once with one line naming the live one.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from mlp_cli.atomic import atomic_write_text, check_destination, make_parents
from mlp_cli.errors import MlpError, RunDirError
from mlp_cli.record_files import read_json_record
from mlp_cli.training.metrics import METRICS_FILE

RUNS = Path("runs")
LOCK_FILE, WRITER_FILE = ".lock", ".writer"
BOOKKEEPING = frozenset({LOCK_FILE, WRITER_FILE, ".eval.lock"})  # files that do not make a directory a run
PRODUCTS = ("last.npz", "best.npz", METRICS_FILE, "summary.json", "eval.json", "parent.json",
            "mlflow.json")  # the MLflow run it logged to (training/loggers/mlflow_logger.py)


def default_run_name(config_name: str | None) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config_name or 'run'}-{stamp}"


def planned_run_dir(run_dir: str | None, run_name: str | None, config_name: str | None) -> Path:
    """``run.dir``, else ``runs/<run.name>``, else ``runs/<config>-<timestamp>``."""
    if run_dir:
        return Path(run_dir)
    return RUNS / (run_name or default_run_name(config_name))


def contents(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` that belong to a run (not the lock's bookkeeping)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name not in BOOKKEEPING)


def check_free(run_dir: Path, overwrite: bool, lock_held: bool = False) -> None:
    """Refuse a directory that holds a run (unless ``overwrite``), or a file in the way; a run
    another process is writing is refused as that (unless we hold its lock ourselves)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} exists and is not a directory")
    names = contents(run_dir)
    if names and not lock_held and is_running(run_dir):  # a live run: its writer is the news, not that it exists
        raise RunDirError(being_written(run_dir, "run"))
    if not names or overwrite:
        return
    if "last.npz" in names:
        advice = f"pass --overwrite to replace it, --resume {run_dir / 'last.npz'} to continue it"
    elif names == ["config.yaml"]:  # a run that saved nothing
        advice = "it holds only a config.yaml, no checkpoint; pass --overwrite to reuse it"
    else:
        advice = "pass --overwrite to replace it"
    raise RunDirError(f"run directory {run_dir} already exists; {advice}, or choose another --out")


def make_run_dir(run_dir: Path) -> None:
    try:
        make_parents(run_dir / "config.yaml")
    except NotADirectoryError as err:  # a file where --out needs a directory: the path typed is wrong
        raise RunDirError(f"cannot create run directory {run_dir}: {err.strerror}") from None
    except OSError as err:  # the disk is at fault (read-only, full, permissions)
        raise MlpError(f"cannot create run directory {run_dir}: {err.strerror}") from None


def clear_products(run_dir: Path) -> None:
    """What ``--overwrite`` discards: every file a run writes (a link in their place: the link).
    A directory under one of their names is refused before anything is removed."""
    doomed = [run_dir / name for name in PRODUCTS if os.path.lexists(run_dir / name)]
    doomed += sorted(run_dir.glob("epoch-*.npz")) + event_files(run_dir)  # TensorBoard's (loggers/tensorboard.py)
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            raise RunDirError(f"cannot overwrite {run_dir}: {path.name} there is a directory, not a file a run "
                              "writes; move it out of the run directory")
    for path in doomed:
        path.unlink(missing_ok=True)


def check_products(run_dir: Path) -> None:
    """Before any work: each file a run writes can be replaced where it lies (nothing there, a
    regular file or a link; a FIFO or a directory under its name is refused, not met an epoch later)."""
    for name in PRODUCTS:
        check_destination(run_dir / name)


def event_files(run_dir: Path) -> list[Path]:
    """The run's TensorBoard event files in reading order: every name holding "tfevents", as
    TensorBoard reads them (a dot file is a half-written one of the tool's, never read)."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if "tfevents" in p.name and not p.name.startswith("."))


class RunLock:
    """The one-writer lock of a run directory, held from ``acquire`` until ``release``."""

    def __init__(self, run_dir: Path, what: str = "run") -> None:
        from filelock import FileLock

        self.run_dir, self.what = run_dir, what  # what: "run", or "sweep" for a sweep directory
        self._lock = FileLock(str(run_dir / LOCK_FILE), timeout=0)

    def acquire(self) -> RunLock:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise RunDirError(being_written(self.run_dir, self.what)) from None
        except OSError as err:
            if err.errno == errno.ELOOP:  # opened without following links: one is in the lock file's place
                raise RunDirError(f"cannot lock {self.what} directory {self.run_dir}: its {LOCK_FILE} is a symbolic "
                                  "link, not a file mlp made; remove the link") from None
            raise MlpError(f"cannot lock {self.what} directory {self.run_dir}: {err.strerror or err}") from None
        writer = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now().isoformat(timespec="seconds")}
        atomic_write_text(self.run_dir / WRITER_FILE, json.dumps(writer) + "\n")
        return self

    def release(self) -> None:
        (self.run_dir / WRITER_FILE).unlink(missing_ok=True)  # while still holding the lock
        self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def being_written(run_dir: Path, what: str) -> str:
    return (f"{what} directory {run_dir} is being written by {describe_writer(run_dir)}; "
            f"wait for it to finish, or use --out NEW for a separate {what}")


def describe_writer(run_dir: Path) -> str:
    """"process 1234 on host (since 2026-12-01T14:31:02)", from the live writer's note."""
    try:
        note: Any = read_json_record(run_dir / WRITER_FILE, 4096, "writer note")  # a FIFO here must not hang
        return f"process {int(note['pid'])} on {str(note['host'])[:64]} (since {str(note['started'])[:19]})"
    except (MlpError, ValueError, KeyError, TypeError):
        return "another process"


def is_running(run_dir: Path) -> bool:
    """Whether a live process holds the run directory's lock (for ``mlp runs``)."""
    from filelock import FileLock, Timeout

    if not (run_dir / LOCK_FILE).exists():
        return False
    probe = FileLock(str(run_dir / LOCK_FILE), timeout=0)
    try:
        probe.acquire()
    except (Timeout, OSError):
        return True
    probe.release()
    return False
