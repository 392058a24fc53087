"""The table of `mlp runs`: every run directory found, what sets it apart, how far it got.

Given directories are searched one level deep: a run directory is a run, a sweep directory
(``spec.yaml`` or ``trials.jsonl``) stands for its trials, and any other folder's subfolders are
each a run or a sweep. Links are not followed. Each run is read from its ``config.yaml``,
``metrics.jsonl``, ``eval.json`` (written by ``mlp eval``) and, for a sweep's trial, its row in
``trials.jsonl``; whatever is missing or unreadable makes it a failed run with a note, never an
error.

Status: finished (all planned epochs, or stopped early), running (a live process holds the run
directory's ``.lock``), interrupted (a checkpoint to resume from), diverged and failed (as its
sweep recorded them, or no metrics at all).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlp_cli.config import best_epoch
from mlp_cli.config_file import MAX_CONFIG_BYTES
from mlp_cli.errors import MlpError, UsageError
from mlp_cli.record_files import read_yaml_record
from mlp_cli.reports.eval_record import read_eval_record
from mlp_cli.sweeps import records
from mlp_cli.sweeps.spec import short_key

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.npz", "best.npz")
MAX_RUNS = 10_000
SORT_KEYS = ("name", "status", "epochs", "dev", "test", "time")
TRIAL_STATUS = {"ok": "finished", "diverged": "diverged", "failed": "failed", "interrupted": "interrupted",
                "pruned": "pruned", "promoted": "interrupted"}  # promoted: its next rung's row not yet written


@dataclass
class RunInfo:
    name: str
    status: str
    settings: dict[str, Any] = field(default_factory=dict)  # flattened config: section.key -> value
    epochs: int = 0
    planned_epochs: int | None = None
    best_dev_accuracy: float | None = None  # dev accuracy (train accuracy for a run without dev set)
    best_epoch: int | None = None
    test_accuracy: float | None = None  # of best.npz (else last.npz), when mlp eval recorded it
    seconds: float | None = None
    note: str | None = None
    differing: dict[str, Any] = field(default_factory=dict)  # the settings that differ between runs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("settings")
        return data


def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in RUN_FILES)


Found = tuple[Path, dict[str, Any] | None, str | None]  # a run directory, its sweep row, a note on its sweep


def find_runs(roots: Sequence[Path]) -> list[Found]:
    """(run directory, its sweep row or None, a note on its sweep's record) for every run under ``roots``."""
    found: list[Found] = []
    for root in roots:
        if root.is_symlink() or not root.is_dir():
            continue
        if records.is_sweep_dir(root) or is_run_dir(root):
            candidates = [root]
        else:
            candidates = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
        for path in candidates:
            found += _sweep_runs(path) if records.is_sweep_dir(path) else [(path, None, None)]
            if len(found) > MAX_RUNS:
                raise UsageError(f"more than {MAX_RUNS:,} runs under {root}; name fewer directories")
    return found


def _sweep_runs(sweep: Path) -> list[Found]:
    """The sweep's trials: its record's rows, and its trial folders (all a record it cannot read leaves)."""
    try:
        latest, note = records.latest(records.read_trials(sweep)), None
    except MlpError as err:
        latest, note = {}, f"its sweep's record could not be read ({' '.join(str(err).split())}); shown from its folder"
    dirs = {p.name: p for p in records.trial_dirs(sweep)}
    names = sorted(set(dirs) | set(latest))
    return [(dirs.get(name, sweep / records.TRIALS_DIR / name), latest.get(name), note) for name in names]


def read_run(path: Path, trial: dict[str, Any] | None = None, sweep_note: str | None = None) -> RunInfo:
    """One run's row; problems become its note and a failed status; ``sweep_note`` (its sweep's
    record unreadable) comes first in the note."""
    info = _read_run(path, trial)
    if sweep_note is not None:
        info.note = sweep_note if info.note is None else f"{sweep_note}; {info.note}"
    return info


def _read_run(path: Path, trial: dict[str, Any] | None) -> RunInfo:
    info = RunInfo(name=str(path), status="failed")
    if path.is_symlink():  # a sweep's trial named in trials.jsonl, its folder replaced by a link
        info.note = f"{path} is a symbolic link; mlp reads only the folders it made, not what a link points to"
        return info
    try:
        info.settings = _flatten(_read_yaml(path / "config.yaml")) if (path / "config.yaml").exists() else {}
        planned = info.settings.get("train.epochs")
        info.planned_epochs = planned if isinstance(planned, int) else None
        rows = _read_metrics(path)
    except MlpError as err:
        info.note = " ".join(str(err).split())
        return info
    best, which = best_epoch(rows)
    if best is not None:
        info.best_dev_accuracy, info.best_epoch = best.get(which), best.get("epoch")
        info.epochs, info.seconds = int(rows[-1].get("epoch", 0)), _seconds(rows)
    elif trial is not None:
        info.seconds = trial.get("seconds")
    info.test_accuracy, eval_note = _test_accuracy(path, {"best.npz": info.best_epoch, "last.npz": info.epochs})
    info.status, info.note = _status(path, rows, info, trial)
    info.note = info.note or (" ".join(eval_note.split()) if eval_note else None)
    return info


def _status(path: Path, rows: list[dict[str, Any]], info: RunInfo, trial: dict[str, Any] | None
            ) -> tuple[str, str | None]:
    finished = bool(rows) and (
        (info.planned_epochs is not None and info.epochs >= info.planned_epochs) or bool(rows[-1].get("stopped_early")))
    if not finished and _active(path):
        return "running", None
    if trial is not None:
        return TRIAL_STATUS[trial["status"]], trial.get("error") if trial["status"] != "ok" else None
    if finished:
        return "finished", None
    if (path / "last.npz").is_file():
        return "interrupted", None
    if not path.is_dir():
        return "failed", "no run directory"
    return "failed", "no metrics" if not rows else "no checkpoint"


def _active(path: Path) -> bool:
    """A live process holds the run directory's lock (training.run_dir)."""
    from mlp_cli.training.run_dir import is_running

    return path.is_dir() and not path.is_symlink() and is_running(path)


def _seconds(rows: list[dict[str, Any]]) -> float:
    """Training time over every session: ``elapsed`` restarts when a run is resumed."""
    total, previous = 0.0, 0.0
    for row in rows:
        elapsed = float(row.get("elapsed") or 0.0)
        if elapsed < previous:
            total += previous
        previous = elapsed
    return total + previous


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml_record(path, MAX_CONFIG_BYTES, "config")
    if not isinstance(data, dict):
        raise MlpError(f"{path} is not a config")
    return data


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    from mlp_cli.training.metrics import METRICS_FILE, read_metrics

    if not (path / METRICS_FILE).exists():
        return []
    return read_metrics(path / METRICS_FILE)


def _test_accuracy(path: Path, epochs: dict[str, int | None]) -> tuple[float | None, str | None]:
    """The recorded test accuracy of best.npz, else last.npz, if it is of the checkpoint the run
    holds now (a result of an older run overwritten since is ignored); and a note on any entry
    of eval.json that is not a result."""
    try:
        recorded, notes = read_eval_record(path)
    except MlpError as err:
        return None, str(err)
    for checkpoint in ("best.npz", "last.npz"):
        entry = recorded.get(checkpoint, {}).get("test")
        if entry is not None and entry["epoch"] == epochs[checkpoint]:
            return float(entry["accuracy"]), "; ".join(notes) or None
    return None, "; ".join(notes) or None


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for section, values in config.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def collect(roots: Sequence[Path], sort: str = "name") -> list[RunInfo]:
    """Every run under ``roots``, with the settings that differ between them, sorted by ``sort``."""
    runs = [read_run(path, trial, note) for path, trial, note in find_runs(roots)]
    configured = [run for run in runs if run.settings]  # a run without a config differs in nothing
    keys = sorted({key for run in configured for key in run.settings} - {"run.dir", "run.name"})
    differing = [k for k in keys if len({json.dumps(run.settings.get(k)) for run in configured}) > 1]
    for run in runs:
        run.differing = {short_key(k): run.settings.get(k) for k in differing}
    return sort_runs(runs, sort)


def sort_runs(runs: list[RunInfo], key: str) -> list[RunInfo]:
    """By name, status, epochs, time; dev and test best first; or by a setting (section.key)."""
    columns = {"name": "name", "status": "status", "epochs": "epochs", "dev": "best_dev_accuracy",
               "test": "test_accuracy", "time": "seconds"}
    settings = {k for run in runs for k in run.settings}
    if key not in columns and key not in settings:
        raise UsageError(f"--sort {key!r}: expected one of {', '.join(SORT_KEYS)} or a setting such as optimizer.lr")

    def raw(run: RunInfo) -> Any:
        return getattr(run, columns[key]) if key in columns else run.settings.get(key)

    def value(run: RunInfo) -> tuple[bool, bool, Any]:  # missing last; numbers before text
        number = isinstance(raw(run), (int, float)) and not isinstance(raw(run), bool)
        return (raw(run) is None, not number, raw(run) if number else str(raw(run)))

    if key in ("dev", "test"):  # best first, runs without a score last
        return sorted(runs, key=lambda r: (raw(r) is None, -(raw(r) or 0.0)))
    return sorted(runs, key=value)
