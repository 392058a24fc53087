"""The record `mlp eval` leaves in a run directory: ``eval.json``, which `mlp runs` reads.

``eval.json`` maps a checkpoint file's name to its results by split::

    {"best.npz": {"test": {"epoch": 12, "loss": 0.07, "accuracy": 0.9801, "examples": 10000,
                           "evaluated_at": "2026-12-01T14:31:02"},
                  "dev": {...}},
     "last.npz": {...}}

Each result is filed under the split that was evaluated. Writers take the directory's
``.eval.lock`` and merge their entry into what is there, then replace the file atomically: two
`mlp eval` of one run at once keep both results. Readers take the file within bounds (see
mlp_cli.record_files) and check every field; a bad entry is left out with a note.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from mlp_cli.errors import MlpError
from mlp_cli.record_files import read_json_record
from mlp_cli.reports.evaluate import EVAL_SPLITS

EVAL_FILE = "eval.json"
EVAL_LOCK = ".eval.lock"
MAX_EVAL_BYTES = 1 << 20  # an entry is ~150 bytes: thousands of checkpoints and splits fit
LOCK_SECONDS = 60.0  # how long a writer waits for another one (each holds it for milliseconds)
Entries = dict[str, dict[str, dict[str, Any]]]  # checkpoint name -> split -> result


def read_eval_record(run_dir: Path) -> tuple[Entries, list[str]]:
    """The well-formed entries of ``run_dir``'s eval.json ({} when there is none), and a note for
    each entry left out. A file that cannot be read at all is an MlpError."""
    path = run_dir / EVAL_FILE
    if not path.exists() and not path.is_symlink():
        return {}, []
    recorded = read_json_record(path, MAX_EVAL_BYTES, "eval record")
    if not isinstance(recorded, dict):
        raise MlpError(f"eval record {path} is not an object of checkpoints")
    entries: Entries = {}
    notes = []
    for checkpoint, splits in recorded.items():
        if not isinstance(splits, dict):
            notes.append(f"{path}: {checkpoint[:40]!r} is not an object of splits; ignored")
            continue
        for split, entry in splits.items():
            problem = entry_problem(split, entry)
            if problem:
                notes.append(f"{path}: {checkpoint[:40]!r} {split[:20]!r}: {problem}; ignored")
            else:
                entries.setdefault(checkpoint, {})[split] = entry
    return entries, notes


def entry_problem(split: str, entry: Any) -> str | None:
    """Why ``entry`` is not one evaluation's result, or None."""
    if split not in EVAL_SPLITS:
        return f"not a split (expected one of {', '.join(EVAL_SPLITS)})"
    if not isinstance(entry, dict):
        return "not an object"
    checks = {"epoch": (_whole, True), "accuracy": (_fraction, True), "loss": (_finite, False),
              "examples": (_whole, False)}
    for key, (valid, required) in checks.items():
        if key not in entry and not required:
            continue
        if not valid(entry.get(key)):
            return f"{key!r} = {str(entry.get(key))[:20]!r} is not {valid.__doc__}"
    if "evaluated_at" in entry and not (isinstance(entry["evaluated_at"], str) and len(entry["evaluated_at"]) <= 40):
        return "'evaluated_at' is not a time"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    """a whole number"""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9


def _fraction(value: Any) -> bool:
    """a fraction from 0 to 1"""
    return _number(value) and 0 <= value <= 1


def _finite(value: Any) -> bool:
    """a finite number"""
    return _number(value) and value >= 0


def record_path(checkpoint: Path) -> Path | None:
    """Where an evaluation of ``checkpoint`` is recorded: its run directory's eval.json, or None
    when the checkpoint does not lie in a run directory (no config.yaml, no metrics.jsonl)."""
    run_dir = checkpoint.parent
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "metrics.jsonl").is_file():
        return None
    return run_dir / EVAL_FILE


def record_evaluation(checkpoint: Path, epoch: int, split: str, loss: float, accuracy: float,
                      examples: int) -> tuple[Path | None, str | None]:
    """File this result under ``split`` in the checkpoint's run directory's eval.json, keeping
    every other entry (under the directory's lock), so that `mlp runs` can show it. Returns the
    file (None for a checkpoint outside a run directory, which is not recorded) and a note when
    the old file was unreadable and is replaced, or some of its entries were bad and dropped."""
    from filelock import FileLock, Timeout

    from mlp_cli.atomic import atomic_write_text

    path = record_path(checkpoint)
    if path is None:
        return None, None
    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown split {split!r}")
    run_dir = path.parent
    try:
        with FileLock(str(run_dir / EVAL_LOCK), timeout=LOCK_SECONDS):
            try:
                entries, notes = read_eval_record(run_dir)
            except MlpError as err:
                entries, notes = {}, [f"{err}; replaced"]
            entries.setdefault(checkpoint.name, {})[split] = {
                "epoch": epoch, "loss": loss, "accuracy": accuracy, "examples": examples,
                "evaluated_at": datetime.now().isoformat(timespec="seconds")}
            atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except Timeout:
        raise MlpError(f"{run_dir / EVAL_LOCK} stayed locked for {LOCK_SECONDS:.0f} s") from None
    return path, "; ".join(notes) or None
