"""Running a sweep: choose its directory, skip what is settled, run the rest, record each trial.

``plan_sweep`` validates every trial and picks the directory: ``--out``, else the newest
``sweeps/<name>-*`` holding the same sweep (same trials, same configs: the same command run
again continues it), else a new ``sweeps/<name>-<time>``. ``SweepRun`` creates a new directory
exclusively (``-2``, ``-3``... when another sweep took the name in the same second), holds the
directory's lock for the whole sweep (a second sweep there is refused), submits the trials that
are not settled (ok or diverged, with their own files still there) to an executor, writes each
returned trial (atomically, when a Dask worker sends its files back) and appends its row to
``trials.jsonl`` as it arrives. An interrupted trial's files go to a Dask worker only as large as
the trial could have written them (``shipped_limits``): a larger one fails the trial, unread.
``stop()`` (the CLI's Ctrl-C) asks every running trial to save and stop; trials not yet started
are not recorded, so the next run starts them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlp_cli.atomic import atomic_write_bytes, atomic_write_text, check_output, make_parents
from mlp_cli.config import Config
from mlp_cli.errors import MlpError, RunDirError
from mlp_cli.sweeps import records
from mlp_cli.sweeps.executors import Executor, ExecutorLost
from mlp_cli.sweeps.runner import (
    DISK_FULL,
    SHIPPED,
    TrialOutcome,
    TrialRefused,
    TrialTask,
    attempt_key,
    run_trial,
)
from mlp_cli.sweeps.spec import SweepSpec, Trial, plan_search
from mlp_cli.training.run_dir import BOOKKEEPING, RunLock

SWEEPS_ROOT = Path("sweeps")
WRITE_ORDER = ("config.yaml", "metrics.jsonl", "best.npz", "last.npz")  # last.npz last: never ahead of metrics


@dataclass
class SweepPlan:
    spec: SweepSpec
    trials: list[Trial]  # run.dir set to each trial's directory
    directory: Path
    continued: bool  # the directory already held this sweep
    fingerprint: str  # of the trials' names and configs (before their run.dir is set)
    named: bool = False  # the directory is the user's --out (else chosen here, and created anew)
    log: tuple[str, ...] = ()  # run.log of every trial (--log), proposed ones included
    base: dict[str, Any] | None = None  # a model-based search's base config, as fingerprinted: its proposals' base


@dataclass
class SweepResult:
    directory: Path
    rows: list[dict[str, Any]]  # the latest row of each trial that has one, in trial order
    skipped: int  # trials already settled before this run
    interrupted: bool
    lost: str | None = None  # why the executor went away mid-sweep (its unfinished trials are interrupted)

    def best(self) -> dict[str, Any] | None:
        ok = [r for r in self.rows if r["status"] == "ok" and r.get("best_dev_accuracy") is not None]
        return max(ok, key=lambda r: r["best_dev_accuracy"], default=None)

    def disk_full(self) -> dict[str, Any] | None:
        """A trial that failed because the disk was full (the sweep then exits non-zero)."""
        return next((r for r in self.rows if r["status"] == "failed" and str(r.get("error")).startswith(DISK_FULL)),
                    None)


class SweepObserver:
    """What the CLI shows; the defaults show nothing. A context manager: a live display starts
    on entering and ends on leaving."""

    def __enter__(self) -> SweepObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def on_start(self, plan: SweepPlan, todo: int, executor: Executor) -> None:
        pass

    def on_trial(self, row: dict[str, Any]) -> None:
        pass

    def on_promoted(self, row: dict[str, Any]) -> None:
        """A pruned sweep's trial goes on to its next rung: one more attempt to run."""


def plan_sweep(spec: SweepSpec, out: Path | None = None) -> SweepPlan:
    trials, read = plan_search(spec)  # the base config, read once: what is fingerprinted is what runs
    base = read if spec.search == "tpe" else None
    fingerprint = records.fingerprint(trials) if base is None else records.fingerprint_of(
        [spec.to_dict(), base])  # the search itself: its trials are proposed as it goes
    directory, continued = _choose_directory(spec, fingerprint, out)
    return SweepPlan(spec, _placed(trials, directory), directory, continued, fingerprint, named=out is not None,
                     base=base)


def _placed(trials: list[Trial], directory: Path) -> list[Trial]:
    """``trials`` with their run.dir in ``directory`` and run.name their own."""
    placed = []
    for trial in trials:
        trial_dir = directory / records.TRIALS_DIR / trial.name
        run = dataclasses.replace(trial.config.run, dir=str(trial_dir), name=trial.name)
        placed.append(dataclasses.replace(trial, config=dataclasses.replace(trial.config, run=run)))
    return placed


def _choose_directory(spec: SweepSpec, fingerprint: str, out: Path | None) -> tuple[Path, bool]:
    if out is not None:
        if out.exists() and (not out.is_dir() or out.is_symlink()):
            raise RunDirError(f"--out {out} exists and is not a directory")
        check_output(out, directory=True)  # no file where a folder above it must be
        if out.is_dir() and any(p.name not in BOOKKEEPING for p in out.iterdir()):
            if records.read_fingerprint(out) != fingerprint:
                _check_spec_file(out)
                raise RunDirError(f"{out} already holds something else than this sweep (other trials or "
                                  "configs, or no spec.yaml); choose another --out")
            return out, True
        return out, False
    if SWEEPS_ROOT.is_dir():
        for candidate in sorted(SWEEPS_ROOT.glob(f"{spec.name}-*"), reverse=True):  # newest first
            if candidate.is_dir() and not candidate.is_symlink() and records.read_fingerprint(candidate) == fingerprint:
                return candidate, True
    directory = SWEEPS_ROOT / f"{spec.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    check_output(directory, directory=True)  # sweeps/ itself may be a file
    return directory, False


def _check_spec_file(directory: Path) -> None:
    """A spec.yaml there that cannot be read (a FIFO, a device, too large, not YAML) is named as
    such (RunDirError), rather than taken for another sweep's."""
    from mlp_cli.record_files import read_yaml_record

    path = directory / records.SPEC_FILE
    if not os.path.lexists(path):
        return
    try:  # the reader of read_fingerprint, whose error it keeps to itself
        read_yaml_record(path, records.MAX_SPEC_BYTES, "sweep spec")
    except MlpError as err:
        raise RunDirError(f"{err}; choose another --out (or remove it)") from None


def _create_new(directory: Path) -> Path:
    """Create ``directory``, or ``<directory>-2``, ``-3``... when another sweep took it first:
    two sweeps started in the same second never share one."""
    make_parents(directory)
    for number in range(1, 1000):
        candidate = directory if number == 1 else directory.with_name(f"{directory.name}-{number}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunDirError(f"cannot create a new sweep directory next to {directory}: 999 of that name exist")


def shipped_limits(config: Config) -> dict[str, int]:
    """The most bytes each file an interrupted trial ships to a remote worker may hold: a
    checkpoint as large as this trial's network can make one, the records as their readers allow."""
    from mlp_cli.config_file import MAX_CONFIG_BYTES  # local: numpy and the readers load only here
    from mlp_cli.training.checkpoint import largest_size
    from mlp_cli.training.metrics import MAX_METRICS_BYTES

    checkpoint = largest_size(config.model.hidden)
    limits = {"config.yaml": MAX_CONFIG_BYTES, "metrics.jsonl": MAX_METRICS_BYTES,
              "last.npz": checkpoint, "best.npz": checkpoint}
    return {name: limits[name] for name in SHIPPED}  # a file shipped without a limit fails here


def shipped_files(trial_dir: Path, config: Config) -> dict[str, bytes]:
    """The trial's files a remote worker resumes from, each refused by its size before it is read
    (TrialRefused): a file larger than the trial could have written is not the trial's."""
    from mlp_cli.record_files import read_record_bytes

    files = {}
    for name, limit in shipped_limits(config).items():
        if records.is_regular(trial_dir / name):
            files[name] = read_record_bytes(
                trial_dir / name, limit, "trial file", error=TrialRefused,
                too_large=f"more than trial {trial_dir.name} (model.hidden = {config.model.hidden}) can have written; "
                          "remove it and run the same command again")
    return files


def save_config(trial_config: Config, path: Path) -> None:
    """A trial's config as a config file: run.dir and run.name cleared for a fresh run."""
    run = dataclasses.replace(trial_config.run, dir=None, name=None)
    make_parents(path)
    atomic_write_text(path, dataclasses.replace(trial_config, run=run).to_yaml())


class SweepRun:
    """One pass over a sweep's unsettled trials through ``executor``."""

    def __init__(self, plan: SweepPlan, executor: Executor, *, data_dir: str | Path | None = None,
                 mirrors: tuple[str, ...] = (), observer: SweepObserver | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.plan, self.executor, self.tags = plan, executor, dict(tags or {})  # tags: for the trials' loggers
        self.data_dir, self.mirrors = (str(data_dir) if data_dir else None), tuple(mirrors)
        self.observer = observer or SweepObserver()
        self.interrupted = False
        self.lost: str | None = None
        self._futures: dict[Any, Trial] = {}

    def stop(self) -> None:
        """Every running trial saves its checkpoint and stops; the others do not start."""
        self.interrupted = True
        self.executor.request_stop(list(self._futures))

    def run(self) -> SweepResult:
        with self._claim():
            return self._run()

    def _claim(self) -> RunLock:
        """Create the directory (a new one exclusively), take its lock for the whole sweep, and
        check under the lock that it holds this sweep (or nothing yet) and nothing foreign."""
        plan = self.plan
        if not plan.continued and not plan.named:
            directory = _create_new(plan.directory)
            if directory != plan.directory:
                trials = _placed(plan.trials, directory)
                self.plan = plan = dataclasses.replace(plan, directory=directory, trials=trials)
        make_parents(plan.directory / records.SPEC_FILE)
        lock = RunLock(plan.directory, what="sweep").acquire()
        try:
            recorded = records.read_fingerprint(plan.directory)
            if recorded is not None and recorded != plan.fingerprint:
                raise RunDirError(f"{plan.directory} now holds another sweep (other trials or configs); "
                                  "choose another --out")
            records.check_places(plan.directory, [t.name for t in plan.trials])
            if recorded is None:
                records.write_spec(plan.directory, plan.spec.to_dict(), plan.trials, plan.fingerprint)
        except BaseException:
            lock.release()
            raise
        return lock

    def _run(self) -> SweepResult:
        directory = self.plan.directory
        if self.plan.spec.prune is not None or self.plan.spec.search == "tpe":
            from mlp_cli.sweeps.pruned import PrunedPass

            skipped = PrunedPass(self).run()
            latest = records.latest(records.read_trials(directory))
            rows = [latest[t.name] for t in self.plan.trials if t.name in latest]
            return SweepResult(directory, rows, skipped, self.interrupted, self.lost)
        previous = records.latest(records.read_trials(directory))
        todo = [t for t in self.plan.trials if not self._settled(t, previous.get(t.name))]
        self.observer.on_start(self.plan, len(todo), self.executor)
        for trial in todo:
            if self.interrupted:
                break
            try:
                task = self._task(trial)
            except TrialRefused as err:  # a result, not the sweep's end: the others go on
                self._append(self._executor_row(trial, "failed", str(err)))
                continue
            self._futures[self.executor.submit(run_trial, task)] = trial
        waiting = dict(self._futures)
        try:
            for future in self.executor.as_completed(self._futures):
                self._collect(future, waiting.pop(future))
        except ExecutorLost as err:  # no trial can finish now: each unfinished one is recorded
            self.lost = str(err)
            for trial in waiting.values():
                self._append(self._executor_row(trial, "interrupted", f"{err} before the trial finished"))
        latest = records.latest(records.read_trials(directory))
        rows = [latest[t.name] for t in self.plan.trials if t.name in latest]
        return SweepResult(directory, rows, len(self.plan.trials) - len(todo), self.interrupted, self.lost)

    def _collect(self, future: Any, trial: Trial) -> None:
        row = self._collected_row(future, trial)
        if row is not None:
            self._append(row)

    def _collected_row(self, future: Any, trial: Trial, stop_at: int | None = None) -> dict[str, Any] | None:
        """The finished trial's files written; its row (None: it never started)."""
        outcome = self._outcome(future, trial)
        if outcome.status is None:
            return None
        self._write_files(trial, outcome.files)
        row = outcome.row
        attempts = self.executor.attempts(attempt_key(outcome.name, stop_at))
        if len(attempts) > 1:  # a worker was lost mid-trial and the scheduler ran it again
            row.update(attempts=len(attempts), tried_on=attempts)
        return row

    def _append(self, row: dict[str, Any]) -> None:
        records.append_trial(self.plan.directory, row)
        self.observer.on_trial(row)

    def _settled(self, trial: Trial, row: dict[str, Any] | None) -> bool:
        """Ok or diverged, and its files are still there, its own (else it runs again)."""
        if row is None or row["status"] not in records.SETTLED:
            return False
        needed = ("config.yaml", "metrics.jsonl", "last.npz") if row["status"] == "ok" else ("config.yaml",)
        return records.holds_trial(Path(trial.config.run.dir or ""), trial.config.to_dict(), needed)

    def _task(self, trial: Trial, stop_at: int | None = None) -> TrialTask:
        from mlp_cli.data.registry import get_spec

        trial_dir = Path(trial.config.run.dir or "")
        resume = {}
        if not self.executor.shares_files and records.is_regular(trial_dir / "last.npz"):
            resume = shipped_files(trial_dir, trial.config)
        dataset = get_spec(trial.config.data.dataset)
        env_mirrors = tuple(m for m in os.environ.get(dataset.mirror_env, "").replace(",", " ").split() if m)
        return TrialTask(
            sweep=self.plan.directory.name, index=trial.index, name=trial.name, overrides=trial.overrides,
            config=trial.config.to_dict(),
            data_dir=self.data_dir if self.executor.shares_files else None,  # a remote worker uses its own cache
            mirrors=self.mirrors + env_mirrors, dask=self.executor.placement(resume), stop_at=stop_at, tags=self.tags,
        )

    def _outcome(self, future: Any, trial: Trial) -> TrialOutcome:
        """The trial's outcome; an executor-level failure (cancelled, every worker tried lost) is
        a failed row, unless the sweep is stopping (then the trial simply did not run)."""
        lost = None if self.interrupted else self.executor.lost(future)
        if lost:  # the scheduler went away: the trial did not finish, a rerun continues it
            self.lost = lost
            return TrialOutcome(trial.name, "interrupted",
                                self._executor_row(trial, "interrupted", f"{lost} before the trial finished"))
        if future.cancelled():
            return TrialOutcome(trial.name, None)
        try:
            return future.result()
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: B036  (CancelledError is a BaseException; KilledWorker)
            if self.interrupted:
                return TrialOutcome(trial.name, None)
            message = " ".join(f"{type(err).__name__}: {err}".split())
            return TrialOutcome(trial.name, "failed",
                                self._executor_row(trial, "failed", f"the executor lost the trial ({message})"))

    @staticmethod
    def _executor_row(trial: Trial, status: str, error: str) -> dict[str, Any]:
        """The row of a trial that the executor, not the trial, ended."""
        return {"trial": trial.name, "index": trial.index, "overrides": trial.overrides, "status": status,
                "epochs": 0, "planned_epochs": trial.config.train.epochs, "attempts": 1, "error": error,
                "finished_at": datetime.now().isoformat(timespec="seconds")}

    def _write_files(self, trial: Trial, files: dict[str, bytes]) -> None:
        if not files:
            return
        trial_dir = Path(trial.config.run.dir or "")
        make_parents(trial_dir / "config.yaml")
        if "config.yaml" in files:  # the settings in force, with the directory it now lives in
            files = {**files, "config.yaml": trial.config.to_yaml().encode("utf-8")}
        for name in WRITE_ORDER:
            if name in files:
                atomic_write_bytes(trial_dir / name, files[name])
