"""Per-epoch metrics: one JSON object per line in ``metrics.jsonl``.

Each row: epoch, step, train_loss, train_accuracy, dev_loss, dev_accuracy, lr, seconds (the
epoch's training time), examples_per_second, elapsed (seconds since the run started) and
stopped_early (true on the epoch after which early stopping ended the run). Losses are the
cross-entropy without the L2 term. A row is written whole and flushed, so a crash loses at
most the epoch in progress, and a row the disk has no room for is taken back; no row ever holds
NaN (a non-finite loss stops the run first).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlp_cli.atomic import append_line, atomic_write_text
from mlp_cli.errors import MissingFileError, MlpError
from mlp_cli.record_files import parse_json_text, read_record_text

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    step: int
    train_loss: float
    train_accuracy: float
    dev_loss: float | None
    dev_accuracy: float | None
    lr: float
    seconds: float
    examples_per_second: float
    elapsed: float
    stopped_early: bool = False  # early stopping ended the run after this epoch
    changes: dict[str, list[Any]] | None = None  # settings changed on resume, from this epoch on: key -> [old, new]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if values["changes"] is None:
            del values["changes"]
        return values


def append_metrics(path: str | Path, row: EpochMetrics) -> None:
    values = row.to_dict()
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"refusing to record non-finite {key} = {value}")
    append_line(path, json.dumps(values) + "\n")  # disk full: the half-written row is taken back


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics file (or of ``<run dir>/metrics.jsonl``); a bad line is an error."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} not found: expected a run directory or its {METRICS_FILE}")
    if path.is_dir() and path.name != METRICS_FILE:  # a run directory; a directory named so is refused below
        path = path / METRICS_FILE
    elif path.suffix == ".npz":
        raise MlpError(f"{path} is a checkpoint, not a run's metrics: give its run directory "
                       f"{path.parent}, or draw its weights with --weights {path}")
    lines = read_record_text(path, MAX_METRICS_BYTES, "metrics file").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = parse_json_text(line, f"metrics file {path} line {number}")
        problem = _row_problem(row)
        if problem:
            raise MlpError(f"metrics file {path} line {number} is not a metrics row: {problem}")
        rows.append(row)
    return rows


MAX_METRICS_BYTES = 64 << 20  # 100,000 epochs of ~300-byte rows fit in 30 MB
MAX_STEP = 10**15  # far past any run: 10^9 epochs of 60,000 one-image batches
# Every number a row may hold, with its range: inside float32's (about 3.4e38), since the
# loggers send rows on as float32, and no negative loss, rate or time.
_RANGES = {"train_loss": (0.0, 1e30), "train_accuracy": (0.0, 1.0), "dev_loss": (0.0, 1e30),
           "dev_accuracy": (0.0, 1.0), "lr": (0.0, 1e30), "seconds": (0.0, 1e12),
           "examples_per_second": (0.0, 1e30), "elapsed": (0.0, 1e12)}
_REQUIRED = ("step", "train_loss", "train_accuracy")  # what every reader of the rows uses; dev_* null without a dev set


def _row_problem(row: Any) -> str | None:
    """Why ``row`` cannot be read as a metrics row, or None."""
    if not isinstance(row, dict) or "epoch" not in row:
        return "expected an object with an 'epoch'"
    missing = [key for key in _REQUIRED if key not in row]
    if missing:
        return f"it has no {missing[0]!r}"
    for key, most in (("epoch", 10**9), ("step", MAX_STEP)):
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
            return f"{key!r} = {_shown(value)} is not a whole number from 0 to {most:.0e}"
    for key, (lowest, highest) in _RANGES.items():
        value = row.get(key)
        if value is None and key not in _REQUIRED:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not lowest <= value <= highest:
            return f"{key!r} = {_shown(value)} is not a number from {lowest:g} to {highest:g}"
    if not isinstance(row.get("stopped_early", False), bool):
        return f"'stopped_early' = {_shown(row['stopped_early'])} is not true or false"
    return _changes_problem(row.get("changes"))


def _changes_problem(changes: Any) -> str | None:
    """``changes``, when present: {setting: [before, after]} (``state.changes``; a setting may be a list)."""
    if changes is None:
        return None
    if not isinstance(changes, dict) or not all(isinstance(pair, list) and len(pair) == 2 for pair in changes.values()):
        return "'changes' is not a mapping of settings to [before, after]"
    return None


def _shown(value: Any) -> str:
    """A value in an error: its first 20 characters (a record may hold anything)."""
    return repr(str(value)[:20])


def copy_metrics(source: str | Path, target: str | Path, last_epoch: int) -> None:
    """Write the rows of ``source`` up to ``last_epoch`` to ``target``, which may be ``source``
    itself (the later rows are dropped; nothing is written when none would be)."""
    source, target = Path(source), Path(target)
    rows = read_metrics(source) if source.exists() else []
    kept = [row for row in rows if row["epoch"] <= last_epoch]
    if target.resolve() == source.resolve() and len(kept) == len(rows):
        return
    atomic_write_text(target, "".join(json.dumps(row) + "\n" for row in kept))
