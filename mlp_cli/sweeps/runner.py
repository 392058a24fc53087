"""One trial, run where an executor puts it: a local worker process or a Dask worker.

A trial trains through the library (``training.session``: the run directory's lock and resume
rules, ``prepare_data``, then ``loop.train``), never a subprocess of the CLI. It resumes from its
run directory's ``last.npz`` when there is one (bit-identical, like ``mlp train --resume``), so
an interrupted sweep continues where it stopped.
Every way a trial can end is an outcome, not an exception: ok, diverged (the loop's
TrainingError), failed (a bad value found once the data is known, a missing dataset, a bug) or
interrupted (the stop flag was raised; the loop saved ``last.npz`` first).

Two placements, one code path. Local (no ``dask``): the trial trains in place, in its
directory inside the sweep. Dask (a ``DaskPlacement``): no shared filesystem is assumed; the trial
fetches and verifies the dataset into the worker's own cache (with the client's mirrors),
trains in a temporary directory seeded with the files the client sent (to resume), and returns
its files as bytes for the client to write.

Stopping: a local pool shares one multiprocessing Event, installed by :func:`init_local_worker`;
on Dask a thread polls a ``distributed.Event`` named in the task. Either sets the flag the
training loop checks between steps.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_cli.config import best_epoch
from mlp_cli.errors import MlpError
from mlp_cli.stop_signals import STOP_SIGNALS

if TYPE_CHECKING:  # not imported here: a local worker sets its BLAS threads before numpy loads
    from mlp_cli.training.loop import Observer

SHIPPED = ("config.yaml", "metrics.jsonl", "last.npz", "best.npz")
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# The stop signals a terminal sends its whole process group, the sweep's workers included.
TERMINAL_SIGNALS = tuple(s for s in STOP_SIGNALS if s != getattr(signal, "SIGTERM", None))
DISK_FULL = "the disk is full"  # how a failed trial's error starts when no room was left to write it
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class DaskPlacement:
    """What a trial on a Dask worker needs besides: it trains in a temporary directory and returns
    its files (no shared filesystem), and it hears of a stop through a Dask event."""

    stop_event: str  # the distributed.Event set on a stop signal
    event_topic: str  # where each attempt's start is logged
    resume_files: dict[str, bytes] = field(default_factory=dict)  # what the client has of the trial


@dataclass(frozen=True)
class TrialTask:
    sweep: str  # the sweep's directory name
    index: int
    name: str
    overrides: dict[str, Any]
    config: dict[str, Any]  # the full config, run.dir = the trial's directory in the sweep
    data_dir: str | None = None
    mirrors: tuple[str, ...] = ()
    dask: DaskPlacement | None = None  # None: a local worker, training in place
    stop_at: int | None = None  # a pruned sweep's rung: stop after this epoch, saved to go on from it
    tags: dict[str, str] = field(default_factory=dict)  # for the loggers (run.log): a sweep's MLflow parent


class TrialRefused(MlpError):
    """A trial the client cannot send to its executor (a file of it larger than it could have
    written): recorded as failed with this one line, and the others go on."""


@dataclass
class TrialOutcome:
    name: str
    status: str | None  # None: stopped before it started (nothing to record)
    row: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Stopping


_SHARED_STOP: Any = None  # the pool's multiprocessing Event, in a local worker process
_LOCAL_STOP = threading.Event()  # a Ctrl-C this process received itself


def init_local_worker(stop_event: Any, blas_threads: int | None) -> None:
    """Initializer of each local pool process (spawned: numpy is not imported yet, so the BLAS
    thread count set here is the one OpenBLAS starts with)."""
    global _SHARED_STOP
    _SHARED_STOP = stop_event
    if blas_threads is not None:
        for variable in BLAS_VARIABLES:
            os.environ[variable] = str(blas_threads)
    for signum in TERMINAL_SIGNALS:
        signal.signal(signum, _on_interrupt)


def _on_interrupt(signum: int, frame: Any) -> None:
    """A terminal's Ctrl-C (or its closing, SIGHUP) reaches every process of the group: the first
    asks the trial to stop after its step (and save); a second one stops it at once. SIGTERM keeps
    its default: the pool's ``kill`` sends it to stop a worker at once."""
    if _LOCAL_STOP.is_set():
        raise KeyboardInterrupt
    _LOCAL_STOP.set()


def _local_stop() -> bool:
    return _LOCAL_STOP.is_set() or (_SHARED_STOP is not None and _SHARED_STOP.is_set())


@contextlib.contextmanager
def _dask_stop(name: str) -> Iterator[Callable[[], bool]]:
    """A flag raised when the client sets the distributed.Event ``name`` (polled by a thread)."""
    from distributed import Event

    flag, done = threading.Event(), threading.Event()
    event = Event(name)
    if event.is_set():  # set before this trial started: it does not start
        flag.set()

    def poll() -> None:
        while not done.is_set():
            try:
                if event.wait(timeout=0.5):
                    flag.set()
                    return
            except Exception:  # the scheduler went away: the trial runs on, its result is lost anyway
                return

    thread = threading.Thread(target=poll, name=f"mlp-stop-{name}", daemon=True)
    thread.start()
    try:
        yield flag.is_set
    finally:
        done.set()


def where_running() -> str:
    """The Dask worker's name and address, else host:pid."""
    if "distributed" in sys.modules:
        from distributed import get_worker

        with contextlib.suppress(ValueError):
            worker = get_worker()
            return f"{worker.name} ({worker.address})" if worker.name != worker.address else worker.address
    return f"{socket.gethostname()}:{os.getpid()}"


# --------------------------------------------------------------------------------------------
# Running


def run_trial(task: TrialTask) -> TrialOutcome:
    """Train one trial to its end, whatever that end is; never raises for the trial's own faults."""
    where = where_running()
    stopping = _dask_stop(task.dask.stop_event) if task.dask else contextlib.nullcontext(_local_stop)
    with stopping as stop_requested:
        if stop_requested():
            return TrialOutcome(task.name, None)
        if task.dask:
            from distributed import get_worker

            get_worker().log_event(task.dask.event_topic, {"trial": attempt_key(task.name, task.stop_at),
                                                           "where": where})
        start = time.perf_counter()
        with _workdir(task) as run_dir:
            status, error = _train(task, run_dir, stop_requested)
            row = summarize(task, run_dir, status, error, time.perf_counter() - start, where)
            files = collect_files(run_dir) if task.dask else {}
    return TrialOutcome(task.name, status, row, files)


def attempt_key(name: str, stop_at: int | None) -> str:
    """What one attempt's start is logged under: the trial and the rung it trains to (a pruned
    sweep runs a trial again for each rung; those are not retries)."""
    return name if stop_at is None else f"{name}@{stop_at}"


@contextlib.contextmanager
def _workdir(task: TrialTask) -> Iterator[Path]:
    if task.dask is None:
        yield Path(task.config["run"]["dir"])
        return
    folder = Path(tempfile.mkdtemp(prefix="mlp-trial-"))
    try:
        for name, data in task.dask.resume_files.items():
            if name in SHIPPED:  # only the files a run directory holds, by their plain names
                (folder / name).write_bytes(data)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _train(task: TrialTask, run_dir: Path, stop_requested: Callable[[], bool]) -> tuple[str, str | None]:
    """Through the training session (the lock, the resume rules, the run directory's files)."""
    from mlp_cli.atomic import atomic_write_text
    from mlp_cli.config import build_config
    from mlp_cli.errors import TrainingError
    from mlp_cli.sweeps.records import is_regular, same_config
    from mlp_cli.training.checkpoint import load_checkpoint
    from mlp_cli.training.loop import TrainingInterrupted
    from mlp_cli.training.session import load_inputs, new_session, resumed_session, run_session

    rung = RungStop(task.stop_at)
    try:
        config = build_config({**task.config, "run": {**task.config["run"], "dir": str(run_dir)}})
        last = run_dir / "last.npz"
        checkpoint = load_checkpoint(last) if is_regular(last) else None
        if checkpoint is not None and not same_config(checkpoint.config, config.to_dict()):
            checkpoint = None  # not this trial's (another sweep's, or its config since changed): start afresh
        if checkpoint is not None and _finished(checkpoint, config, run_dir, task.stop_at):
            atomic_write_text(run_dir / "config.yaml", config.to_yaml())  # the checkpoint's, whatever was there
            return "ok", None  # trained to the end before its row was recorded
        session = (resumed_session(config, checkpoint, last, None) if checkpoint is not None
                   else new_session(config, None, overwrite=True))  # no last.npz: nothing trained to keep
        session.tags = {"sweep": task.sweep, "trial": task.name, **task.tags}
        with session:
            data = load_inputs(session, data_dir=task.data_dir, mirrors=task.mirrors)
            run_session(session, data, observer=rung.watcher(), stop_requested=lambda: stop_requested() or rung.reached)
    except MlpError as err:
        if isinstance(err, TrainingInterrupted):  # its advice (mlp train --resume) is not the sweep's
            return ("ok" if rung.reached and not stop_requested() else "interrupted"), None
        return ("diverged" if isinstance(err, TrainingError) else "failed"), " ".join(str(err).split())
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:  # the sweep will exit non-zero: the machine, not the trial
            return "failed", f"{DISK_FULL}: {err.strerror}: {err.filename}"
        return "failed", f"{type(err).__name__}: {err}"
    except Exception as err:  # a bug shown in one trial must not end the others: recorded, with its type
        return "failed", f"{type(err).__name__}: {err}"
    return "ok", None


@dataclass
class RungStop:
    """Raised once the epoch ``stop_at`` is done: the loop then saves last.npz and stops, exactly
    as on a Ctrl-C, and the same config resumed from there goes on as if it had not stopped
    (whatever its schedule). ``stop_at`` None: the trial trains to its end."""

    stop_at: int | None
    reached: bool = False

    def watcher(self) -> Observer:
        """The training loop's observer that raises it."""
        from mlp_cli.training.loop import Observer

        rung = self

        class RungWatcher(Observer):
            def on_epoch(self, row: Any, is_best: bool) -> None:
                rung.reached = rung.reached or (rung.stop_at is not None and row.epoch >= rung.stop_at)

        return RungWatcher()


def _finished(checkpoint: Any, config: Any, run_dir: Path, stop_at: int | None = None) -> bool:
    """Trained to its end, or to the rung it was to stop at, before its row was recorded."""
    from mlp_cli.sweeps.records import is_regular
    from mlp_cli.training.metrics import read_metrics

    if checkpoint.epoch >= min(config.train.epochs, stop_at or config.train.epochs):
        return True
    rows = read_metrics(run_dir) if is_regular(run_dir / "metrics.jsonl") else []
    return bool(rows) and bool(rows[-1].get("stopped_early"))


def summarize(
    task: TrialTask, run_dir: Path, status: str, error: str | None, seconds: float, where: str
) -> dict[str, Any]:
    """The trial's row for trials.jsonl, from its metrics.jsonl (whole history, resumes included)."""
    from mlp_cli.training.metrics import read_metrics

    try:
        rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    except MlpError:
        rows = []
    best, which = best_epoch(rows)
    last = rows[-1] if rows else {}
    return {
        "trial": task.name, "index": task.index, "overrides": task.overrides, "status": status,
        "best_dev_accuracy": best.get(which) if best else None, "best_epoch": best["epoch"] if best else None,
        "best_by": which, "epochs": last.get("epoch", 0),
        "planned_epochs": task.stop_at or task.config["train"]["epochs"],  # a rung's, in a pruned sweep
        **{key: last.get(key) for key in ("train_loss", "train_accuracy", "dev_loss", "dev_accuracy")},
        "seconds": round(seconds, 3), "where": where, "attempts": 1, "error": error,
        "finished_at": datetime.now().isoformat(timespec="seconds"),
    }


def collect_files(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in SHIPPED if (run_dir / name).is_file()}
