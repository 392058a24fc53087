"""The sweep directory and its records.

Layout::

    <sweep>/spec.yaml        the sweep as given, its trials' overrides and a fingerprint
    <sweep>/trials.jsonl     one JSON row per finished attempt of a trial (append-only)
    <sweep>/trials/<name>/   one ordinary run directory per trial (config.yaml, metrics.jsonl, ...)

``trials.jsonl`` only grows: running a sweep again appends rows, and a trial's latest row is
its current state. A row: trial, index, overrides, status (ok, diverged, failed, interrupted; in a
pruned sweep also pruned: stopped at a rung, and promoted: going on from it, written as it goes),
best_dev_accuracy and best_epoch, epochs and planned_epochs, the last epoch's train/dev loss and
accuracy, seconds, where it ran, attempts (more than 1 when a Dask worker was lost mid-trial),
error (a one-line message, or null) and finished_at; in a pruned sweep, rung (the 0-based rung the
attempt trained to, planned_epochs its epochs). Only the sweep's own process writes here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlp_cli.atomic import append_line, atomic_write_text, file_kind, make_parents, naming
from mlp_cli.errors import MlpError, RunDirError, UsageError
from mlp_cli.record_files import read_record_bytes, read_yaml_record

SPEC_FILE = "spec.yaml"
TRIALS_FILE = "trials.jsonl"
TRIALS_DIR = "trials"
STATUSES = ("ok", "diverged", "failed", "interrupted", "pruned", "promoted")
SETTLED = ("ok", "diverged")  # outcomes a rerun keeps; failed and interrupted trials run again
MAX_SPEC_BYTES = 16 << 20  # 10,000 trials' names and overrides: ~2 MB
MAX_ROWS = 1_000_000  # lines of trials.jsonl read (a file of a million attempts is not a sweep)
MAX_BYTES = 256 << 20  # a row is under 1 KB: a quarter of a million attempts
MAX_LINE = 64 << 10  # characters of one row (longer is not a row this tool wrote)
MAX_CONFIG = 1 << 20  # bytes of a trial's config.yaml read back
MAX_NAME = 255  # characters of a trial's name (a folder name)


def is_sweep_dir(path: Path) -> bool:
    return (path / SPEC_FILE).is_file() or (path / TRIALS_FILE).is_file()


def trial_dirs(sweep: Path) -> list[Path]:
    """The trials' run directories, by name (links are not followed: a trial that is a link is
    left out, a trials folder that is one is an error, since every trial would be read through it)."""
    folder = sweep / TRIALS_DIR
    if folder.is_symlink():
        raise UsageError(f"{folder} is a symbolic link; mlp reads only the folders its sweeps made, not what a "
                         "link points to: put the folder itself there")
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())


def is_regular(path: Path) -> bool:
    """A regular file, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def check_places(sweep: Path, names: Sequence[str]) -> None:
    """Refuse a sweep whose trials folder, or a trial's directory, is a link or not a directory:
    a trial never follows a link out of its sweep (to resume and rewrite another run)."""
    for path in (sweep / TRIALS_FILE, sweep / TRIALS_DIR, *(sweep / TRIALS_DIR / name for name in names)):
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as err:
            raise MlpError(f"cannot read {path}: {err.strerror or err}") from None
        wanted = (stat.S_ISREG, "file") if path.name == TRIALS_FILE else (stat.S_ISDIR, "directory")
        if not wanted[0](mode):
            raise RunDirError(f"{path} is {file_kind(mode)}, not a {wanted[1]} of this sweep; remove it and run "
                              "the sweep again")


def holds_trial(trial_dir: Path, config: dict[str, Any], needed: Sequence[str]) -> bool:
    """Whether ``trial_dir`` is a real directory whose ``needed`` files are regular files and whose
    stored config.yaml is ``config`` (run.dir aside: the same sweep may be named by another path)."""
    if not (trial_dir.is_dir() and not trial_dir.is_symlink() and all(is_regular(trial_dir / n) for n in needed)):
        return False
    try:  # the one bounded reader and YAML rule (no aliases, nesting bounded) of every record
        stored = read_yaml_record(trial_dir / "config.yaml", MAX_CONFIG, "trial config")
    except MlpError:
        return False
    return same_config(stored, config)


def same_config(stored: Any, config: dict[str, Any]) -> bool:
    """``stored`` (read back from a file) is ``config``, whatever the run directory."""
    def settled(value: Any) -> Any:
        if not isinstance(value, dict) or not isinstance(value.get("run"), dict):
            return None
        return json.loads(json.dumps({**value, "run": {**value["run"], "dir": None}}, sort_keys=True, default=str))

    mine = settled(stored)
    return mine is not None and mine == settled(config)


def fingerprint(trials: Sequence[Any]) -> str:
    """SHA-256 of every trial's name and full config: the same command gives the same sweep."""
    text = json.dumps([[t.name, t.config.to_dict()] for t in trials], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint_of(value: Any) -> str:
    """SHA-256 of ``value`` as JSON: a model-based sweep's (its trials are proposed as it goes)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


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
    try:  # within bounds: a FIFO or /dev/zero link here must not hang or fill memory
        document = read_yaml_record(sweep / SPEC_FILE, MAX_SPEC_BYTES, "sweep spec")
    except MlpError:
        return None
    value = document.get("fingerprint") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def append_trial(sweep: Path, row: dict[str, Any]) -> None:
    """Append one row, whole and flushed; a row the disk has no room for is taken back."""
    path = sweep / TRIALS_FILE
    _drop_torn_tail(path)
    append_line(path, json.dumps(row, allow_nan=False) + "\n")


def _drop_torn_tail(path: Path) -> None:
    """Cut off a last line without its newline (a crash mid-append) before appending after it, so
    that it never ends up in the middle of the file, where it would be a bad row."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return  # append_line refuses it
        with open(path, "rb+") as handle:
            size = end = handle.seek(0, os.SEEK_END)
            handle.seek(max(size - 1, 0))
            if handle.read(1) in (b"", b"\n"):
                return  # empty, or whole: the common case reads one byte
            keep = 0
            while end > 0:
                start = max(0, end - 65536)
                handle.seek(start)
                cut = handle.read(end - start).rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                end = start
            if keep < size:
                handle.truncate(keep)
    except FileNotFoundError:
        return
    except OSError as err:
        raise naming(err, path) from err


def read_trials(sweep: Path) -> list[dict[str, Any]]:
    """Every row of ``trials.jsonl`` (none when absent), read within bounds.

    The file must be a regular file of at most ``MAX_BYTES`` (a link, a FIFO or a device is an
    error, never opened). A torn last line (a crash mid-append) is ignored. A row that is not
    JSON, or not a trial record, is dropped; a row whose fields have the wrong type or range
    becomes a failed row whose error says what is wrong (so the trial runs again and the tables
    show the note instead of the value). An error only when the file as a whole cannot be read.
    """
    path = sweep / TRIALS_FILE
    lines = _read_lines(path)
    rows = []
    for number, line in enumerate(lines[:MAX_ROWS], start=1):
        if not line.strip() or len(line) > MAX_LINE:
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # torn, not JSON, a 5000-digit number, deep nesting
            continue
        if not isinstance(row, dict) or not _is_name(row.get("trial")):
            continue
        problem = row_problem(row)
        rows.append(row if problem is None else _noted(row, f"{TRIALS_FILE} line {number}: {problem}"))
    return rows


def _read_lines(path: Path) -> list[str]:
    """The lines of trials.jsonl, read by the one bounded reader of records (a regular file, never
    waited on, at most MAX_BYTES); a link in its place is refused too."""
    if not os.path.lexists(path):
        return []
    if path.is_symlink():
        raise MlpError(f"{path} is a link, not a regular file; remove it (or choose another sweep directory)")
    data = read_record_bytes(path, MAX_BYTES, "sweep record", too_large="not a record mlp sweep wrote; move it out "
                             "of the sweep directory, or choose another --out")
    whole = data[: data.rfind(b"\n") + 1]  # a last line without its newline is torn: the next append cuts it off
    return whole.decode("utf-8", errors="replace").splitlines()


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME and "/" not in value and value not in (".", "..")


_FIELDS: dict[str, tuple[type | tuple[type, ...], float, float]] = {  # key -> (type, lowest, highest)
    "index": (int, 0, 10**9), "epochs": (int, 0, 10**9), "planned_epochs": (int, 0, 10**9),
    "best_epoch": (int, 0, 10**9), "attempts": (int, 1, 10**6), "rung": (int, 0, 10**3),
    "best_dev_accuracy": ((int, float), 0.0, 1.0), "train_accuracy": ((int, float), 0.0, 1.0),
    "dev_accuracy": ((int, float), 0.0, 1.0), "train_loss": ((int, float), 0.0, math.inf),
    "dev_loss": ((int, float), 0.0, math.inf), "seconds": ((int, float), 0.0, math.inf),
}
_TEXTS = ("where", "error", "finished_at", "best_by")


def row_problem(row: dict[str, Any]) -> str | None:
    """Why a row's fields cannot be shown or trusted (wrong type, out of range), or None."""
    if row.get("status") not in STATUSES:
        return f"status {_shown(row.get('status'))} is not one of {', '.join(STATUSES)}"
    for key, (kind, lowest, highest) in _FIELDS.items():
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind) or not _within(value, lowest, highest):
            return f"{key} = {_shown(value)} is not {'a whole number' if kind is int else 'a number'} " \
                   f"from {lowest:g} to {highest:g}"
    for key in _TEXTS:
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{key} = {_shown(row[key])} is not text"
    overrides = row.get("overrides", {})
    if not isinstance(overrides, dict) or not all(
            isinstance(v, str | int | float | bool) or v is None for v in overrides.values()):
        return "overrides is not a table of settings"
    tried = row.get("tried_on", [])
    if not isinstance(tried, list) or not all(isinstance(t, str) for t in tried):
        return "tried_on is not a list of workers"
    return None


def _within(value: Any, lowest: float, highest: float) -> bool:
    """``lowest <= value <= highest`` and finite (a 4000-digit int is compared, never converted)."""
    return not (isinstance(value, float) and math.isnan(value)) and lowest <= value <= highest and value != math.inf


def _shown(value: Any) -> str:
    text = json.dumps(value, allow_nan=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _noted(row: dict[str, Any], note: str) -> dict[str, Any]:
    """A failed row for ``row``'s trial, carrying ``note`` as its error; nothing else of it is kept."""
    return {"trial": row["trial"], "overrides": {}, "status": "failed", "error": note}


def latest(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Trial name -> its latest row."""
    return {row["trial"]: row for row in rows}
