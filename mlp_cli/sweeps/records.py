"""The sweep directory and its records.

Layout::

    <sweep>/spec.yaml        the sweep as given, its trials' overrides and a fingerprint
    <sweep>/trials.jsonl     one JSON row per finished attempt of a trial (append-only)
    <sweep>/trials/<name>/   one ordinary run directory per trial (config.yaml, metrics.jsonl, ...)

``trials.jsonl`` only grows: running a sweep again appends rows, and a trial's latest row is
its current state. A row: trial, index, overrides, status (ok, diverged, failed, interrupted),
best_dev_accuracy and best_epoch, epochs and planned_epochs, the last epoch's train/dev loss and
accuracy, seconds, where it ran, attempts (more than 1 when a Dask worker was lost mid-trial),
error (a one-line message, or null) and finished_at. Only the sweep's own process writes here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlp_cli.atomic import atomic_write_text, make_parents, naming
from mlp_cli.errors import MlpError

SPEC_FILE = "spec.yaml"
TRIALS_FILE = "trials.jsonl"
TRIALS_DIR = "trials"
STATUSES = ("ok", "diverged", "failed", "interrupted")
SETTLED = ("ok", "diverged")  # outcomes a rerun keeps; failed and interrupted trials run again
MAX_SPEC_BYTES = 16 << 20  # 10,000 trials' names and overrides: ~2 MB
MAX_ROWS = 1_000_000  # lines of trials.jsonl read (a file of a million attempts is not a sweep)


def is_sweep_dir(path: Path) -> bool:
    return (path / SPEC_FILE).is_file() or (path / TRIALS_FILE).is_file()


def trial_dirs(sweep: Path) -> list[Path]:
    """The trials' run directories, by name (links are not followed)."""
    folder = sweep / TRIALS_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())


def fingerprint(trials: Sequence[Any]) -> str:
    """SHA-256 of every trial's name and full config: the same command gives the same sweep."""
    text = json.dumps([[t.name, t.config.to_dict()] for t in trials], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_spec(sweep: Path, spec: dict[str, Any], trials: Sequence[Any], fingerprint: str) -> None:
    import yaml

    document = {
        **spec,
        "fingerprint": fingerprint,
        "expanded": [{"trial": t.name, "overrides": t.overrides} for t in trials],
    }
    make_parents(sweep / SPEC_FILE)
    atomic_write_text(sweep / SPEC_FILE, yaml.safe_dump(document, sort_keys=False))


def read_fingerprint(sweep: Path) -> str | None:
    """The fingerprint recorded in ``sweep``'s spec.yaml, or None when it has none or is unreadable."""
    from mlp_cli.record_files import read_yaml_record

    try:  # within bounds: a FIFO or /dev/zero link here must not hang or fill memory
        document = read_yaml_record(sweep / SPEC_FILE, MAX_SPEC_BYTES, "sweep spec")
    except MlpError:
        return None
    value = document.get("fingerprint") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def append_trial(sweep: Path, row: dict[str, Any]) -> None:
    """Append one row, whole and flushed; a row the disk has no room for is taken back."""
    path = sweep / TRIALS_FILE
    line = json.dumps(row, allow_nan=False) + "\n"
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise naming(err, path) from err


def read_trials(sweep: Path) -> list[dict[str, Any]]:
    """Every row of ``trials.jsonl`` (none when absent). A torn last line (a crash mid-append)
    is ignored; any other bad line is an error naming it."""
    path = sweep / TRIALS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise MlpError(f"cannot read {path}: {err}") from None
    rows = []
    for number, line in enumerate(lines[:MAX_ROWS], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise MlpError(f"{path} line {number} is not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("trial"), str) or row.get("status") not in STATUSES:
            raise MlpError(f"{path} line {number} is not a trial record")
        rows.append(row)
    return rows


def latest(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Trial name -> its latest row."""
    return {row["trial"]: row for row in rows}
