"""Where trials run: one ``concurrent.futures``-style interface, two implementations.

``LocalExecutor`` is a ``ProcessPoolExecutor`` of spawned processes. Spawned, not forked, so
that each worker sets its BLAS thread count before numpy is first imported: with several trials
side by side each gets cores // jobs threads (one on a 2-core machine at --jobs 2), alone it
keeps the library's default. ``DaskExecutor`` is a ``distributed.Client``: of a running cluster
(``tcp://host:8786``) or of a local one it starts. Both hand back futures with ``result()`` and
iterate them with ``as_completed``; the sweep does not know which it has, apart from
``shares_files`` (Dask workers share no filesystem with the client, so trials come back as bytes)
and the ``DaskPlacement`` a Dask trial carries. ``sweeps.registry.EXECUTORS`` names them.

A Dask worker lost mid-trial makes the scheduler run the trial again elsewhere; each attempt
logs its start as an event, so ``attempts`` tells the sweep where a trial was tried. A lost
scheduler cancels every future (``lost`` says so), and a cluster without a single worker for
``no_workers_timeout`` seconds ends ``as_completed`` with ``ExecutorLost``: the sweep records the
unfinished trials as interrupted and ends with one line, instead of waiting forever. After a stop
it does not wait at all for a cluster without a worker: the trials it would start are cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from mlp_cli.errors import MlpError, UsageError
from mlp_cli.sweeps.registry import EXECUTORS
from mlp_cli.sweeps.runner import BLAS_VARIABLES, DaskPlacement, TrialTask, init_local_worker
from mlp_cli.words import did_you_mean

DASK_HINT = "pip install -e '.[dask]' (in the mlp checkout), or pip install distributed"
NO_WORKERS_TIMEOUT = 300.0  # seconds a Dask cluster may have no worker at all before the sweep ends
MAX_JOBS = 256  # trials at once: a process (local) or a Dask worker each, ~100 MB apiece and a trial's data
POLL_SECONDS = 1.0  # how often a Dask sweep looks at its cluster while no trial completes
ADDRESS = re.compile(r"((tcp|tls|ucx|ws|wss|inproc)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?")


class ExecutorLost(MlpError):
    """The cluster the trials ran on is gone (its scheduler lost, or no workers left)."""


class Executor(Protocol):
    shares_files: bool  # trials write their directories in place (else they return them as bytes)
    workers: int  # how many trials run at once (as far as the client knows)
    description: str

    def placement(self, resume_files: dict[str, bytes]) -> DaskPlacement | None: ...
    def submit(self, fn: Callable[[TrialTask], Any], task: TrialTask) -> Any: ...
    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]: ...
    def attempts(self, trial: str) -> list[str]: ...
    def lost(self, future: Any) -> str | None: ...
    def request_stop(self, futures: list[Any]) -> None: ...
    def kill(self) -> None: ...
    def close(self) -> None: ...


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plan_jobs(requested: int | None, kind: str, scheduler: str | None, trials: int) -> tuple[int, str | None]:
    """Trials at once: as asked (default: the cores, or 2 Dask workers), never more than there are
    trials to run; and a note when more are asked than this machine has cores for them."""
    if requested is not None and not 1 <= requested <= MAX_JOBS:
        raise UsageError(f"--jobs {requested}; expected 1 to {MAX_JOBS} (trials at once, each a process of its own)")
    cores, spec = default_jobs(), EXECUTORS[kind]
    here = not (spec.takes_scheduler and scheduler)  # a local Dask cluster runs on this machine too
    if requested is not None and not here:
        raise UsageError("--jobs sets the workers of a cluster started here; with --scheduler the cluster's own "
                         "workers decide how many trials run at once: leave --jobs out")
    jobs = min(requested or spec.jobs or cores, max(trials, 1))
    note = None
    if here and requested is not None and min(requested, max(trials, 1)) > cores:
        note = (f"--jobs {requested}: this machine has {cores} core{'s' if cores > 1 else ''}; "
                f"{jobs} trials at once will share them, each slower")
    return jobs, note


def blas_threads(jobs: int) -> int | None:
    """BLAS threads per trial: None (the library's default) alone, else the cores shared out."""
    return None if jobs == 1 else max(1, default_jobs() // jobs)


class LocalExecutor:
    shares_files = EXECUTORS["local"].shares_files

    def __init__(self, jobs: int, scheduler: str | None = None, no_workers_timeout: float = 0.0) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self.workers = jobs
        threads = blas_threads(jobs)
        self.description = f"{jobs} local process{'es' if jobs > 1 else ''}" + (
            f", {threads} BLAS thread{'s' if threads > 1 else ''} each" if threads else "")
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                         initializer=init_local_worker, initargs=(self._stop, threads))

    def placement(self, resume_files: dict[str, bytes]) -> DaskPlacement | None:
        return None

    def submit(self, fn: Callable[[TrialTask], Any], task: TrialTask) -> Any:
        return self._pool.submit(fn, task)

    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        from concurrent.futures import as_completed

        return as_completed(list(futures))

    def attempts(self, trial: str) -> list[str]:
        return []

    def lost(self, future: Any) -> str | None:
        return None  # a local future is cancelled only by request_stop

    def request_stop(self, futures: list[Any]) -> None:
        """Trials not started yet are cancelled; running ones see the shared event and save."""
        for future in futures:
            future.cancel()
        self._stop.set()

    def kill(self) -> None:
        import multiprocessing

        for child in multiprocessing.active_children():
            child.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    shares_files = EXECUTORS["dask"].shares_files

    def __init__(self, jobs: int, scheduler: str | None = None,
                 no_workers_timeout: float = NO_WORKERS_TIMEOUT) -> None:
        try:
            import distributed
        except ImportError:
            raise UsageError(f"--executor dask needs dask.distributed, which is not installed: {DASK_HINT}") from None
        self._id = uuid.uuid4().hex[:12]
        self._stop_event, self._event_topic = f"mlp-stop-{self._id}", f"mlp-trials-{self._id}"
        self._cluster: Any = None
        self._stopping = False
        self.scheduler, self.no_workers_timeout = scheduler, no_workers_timeout
        if scheduler:
            try:
                self.client = distributed.Client(scheduler, timeout=15)
            except ValueError as err:  # an address Dask cannot parse
                raise UsageError(f"--scheduler {scheduler!r} is not a Dask address: {err}") from None
            except (OSError, TimeoutError) as err:
                raise MlpError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
        else:
            env = {variable: "1" for variable in BLAS_VARIABLES}
            with _sigint_ignored():  # the workers inherit it: a terminal's Ctrl-C must not kill them
                self._cluster = distributed.LocalCluster(
                    n_workers=jobs, threads_per_worker=1, processes=True, env=env, silence_logs=logging.ERROR,
                    dashboard_address="127.0.0.1:0")  # None still takes :8787; any free loopback port
            self.client = distributed.Client(self._cluster)
        workers = self.client.scheduler_info().get("workers", {})
        self.workers = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        self.description = f"Dask at {scheduler} ({len(workers)} workers)" if scheduler else (
            f"a local Dask cluster of {jobs} workers")

    def placement(self, resume_files: dict[str, bytes]) -> DaskPlacement:
        return DaskPlacement(self._stop_event, self._event_topic, resume_files)

    def submit(self, fn: Callable[[TrialTask], Any], task: TrialTask) -> Any:
        rung = f"-{task.stop_at}" if task.stop_at else ""  # a pruned sweep submits a trial once per rung
        return self.client.submit(fn, task, pure=False, key=f"mlp-trial-{self._id}-{task.index}{rung}")

    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        """Each future as it completes; ExecutorLost once the cluster has had no worker for
        ``no_workers_timeout`` seconds (a lost scheduler cancels the futures: they complete). After
        a stop, a cluster without a worker runs none of the rest: they are cancelled, not waited for."""
        from concurrent.futures import CancelledError

        from distributed import wait

        pending, idle_since = list(futures), None
        while pending:
            with contextlib.suppress(TimeoutError, CancelledError):  # none done yet; or all cancelled
                wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
            done = [future for future in pending if future.done()]
            pending = [future for future in pending if not future.done()]
            yield from done
            if self._stopping and pending and not self._has_workers():  # no worker: none of them started
                self.client.cancel(pending)
                return
            if done or self._has_workers():
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self.no_workers_timeout:
                raise ExecutorLost(f"the Dask cluster{self._where()} has had no workers for "
                                   f"{self.no_workers_timeout:g} s")

    def _has_workers(self) -> bool:
        return self.client.status != "running" or bool(self.client.scheduler_info().get("workers"))

    def _where(self) -> str:
        return f" at {self.scheduler}" if self.scheduler else ""

    def attempts(self, trial: str) -> list[str]:
        if self.client.status != "running":  # the scheduler is lost: asking would wait for a reconnection
            return []
        try:
            events = self.client.get_events(self._event_topic)
        except Exception:  # noqa: BLE001  (the scheduler is gone: lost() reports it)
            return []
        return [m["where"] for _, m in events if isinstance(m, dict) and m.get("trial") == trial]

    def lost(self, future: Any) -> str | None:
        """Why the cluster cancelled ``future`` (its scheduler lost), or None."""
        if future.status != "cancelled":
            return None
        return f"the Dask scheduler{self._where()} was lost"

    def request_stop(self, futures: list[Any]) -> None:
        """Every trial sees the event, running or not yet started (cancelling a Dask future
        would kill a running trial and lose its checkpoint)."""
        from distributed import Event

        self._stopping = True  # and as_completed stops waiting for a worker that would start nothing
        Event(self._stop_event, client=self.client).set()

    def kill(self) -> None:
        self.close()

    def close(self) -> None:
        if self.client.status != "running":  # the scheduler is lost: the sweep's line says so, not Dask's log
            logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
        with contextlib.suppress(Exception):  # a lost scheduler: nothing left to close cleanly
            self.client.close(timeout=5)
        if self._cluster is not None:
            self._cluster.close()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes start. An ignored signal stays ignored across exec,
    and Python (and asyncio) then install no handler of their own: the local cluster's workers
    keep running through Ctrl-C, and the sweep stops their trials through a Dask event instead."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect from
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_executor(kind: str, scheduler: str | None, no_workers_timeout: float | None = None) -> None:
    """Usage errors (exit 2) found before any work: the executor's name, the scheduler's address,
    a no-workers timeout (None: not given) that is a number of seconds, given to an executor that has one."""
    spec = EXECUTORS.get(kind)
    if spec is None:
        raise UsageError(f"--executor {kind!r} is not one of {', '.join(EXECUTORS)}{did_you_mean(kind, EXECUTORS)}")
    with_scheduler = " or ".join(name for name, other in EXECUTORS.items() if other.takes_scheduler)
    if scheduler is not None and not spec.takes_scheduler:
        raise UsageError(f"--scheduler goes with --executor {with_scheduler}")
    if no_workers_timeout is not None and not spec.takes_scheduler:
        raise UsageError(f"--no-workers-timeout goes with --executor {with_scheduler} (a cluster that may lack "
                         "workers)")
    if no_workers_timeout is not None:
        _check_timeout(no_workers_timeout)
    if scheduler is not None and not ADDRESS.fullmatch(scheduler):
        raise UsageError(f"--scheduler {scheduler[:80]!r} is not a Dask address; expected e.g. tcp://host:8786")


def _check_timeout(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds >= 1):  # NaN is never below 1: it would switch the watch off
        raise UsageError(f"--no-workers-timeout {seconds}; expected a number of seconds, at least 1")


# The classes the registry's entries name (``ExecutorSpec.implementation``): a mapping that mypy
# and a rename can see; a test holds it and the registry in step.
IMPLEMENTATIONS: dict[str, Callable[[int, str | None, float], Executor]] = {
    cls.__name__: cls for cls in (LocalExecutor, DaskExecutor)
}


def make_executor(kind: str, jobs: int, scheduler: str | None,
                  no_workers_timeout: float = NO_WORKERS_TIMEOUT) -> Executor:
    check_executor(kind, scheduler)
    if not 1 <= jobs <= MAX_JOBS:
        raise UsageError(f"--jobs {jobs}; expected 1 to {MAX_JOBS}")
    _check_timeout(no_workers_timeout)
    return IMPLEMENTATIONS[EXECUTORS[kind].implementation](jobs, scheduler, no_workers_timeout)
