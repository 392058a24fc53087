"""TensorBoard event files in the run directory, so ``tensorboard --logdir runs`` lists every run.

Each process that trains writes its own file (``events.out.tfevents.<time>.<host>.<pid>.mlp``),
one record per event, each in a single ``write`` (a kill cannot leave half of one), flushed to
disk at every epoch. What is logged: per epoch the numbers of ``metrics.jsonl`` (``EPOCH_TAGS``) at
the row's step; every ``run.log_every`` steps the batch loss; once the resolved config (text) and
its settings for the HParams dashboard; on a resume the changed settings, at the step where they
took effect.

A run's stream only grows and never repeats a step. Before a resumed run writes, its history is
rewritten into one file (``rewrite_history``): the events of the run it resumes up to the
checkpoint's step (later ones, which the continued run is about to redo, or which ``--overwrite``
discards, are dropped), every epoch of ``metrics.jsonl`` (which fills an event a crash cut
short), nothing twice. A branch gets the history it copied; ``mlp log tensorboard`` backfills a
run trained without logging the same way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_cli.atomic import naming
from mlp_cli.errors import ConfigError, MlpError, OutputPathError
from mlp_cli.record_files import read_record_bytes, read_yaml_record
from mlp_cli.training.checkpoint import MAX_EPOCHS  # train.epochs' ceiling
from mlp_cli.training.loggers import events
from mlp_cli.training.loggers.base import BATCH_TAG, EPOCH_TAGS, RunLogger, RunStart, epoch_values, flat_settings
from mlp_cli.training.metrics import METRICS_FILE, read_metrics
from mlp_cli.training.run_dir import event_files

if TYPE_CHECKING:
    from mlp_cli.training.metrics import EpochMetrics

CONFIG_TAG, CHANGES_TAG = "config", "resume/changes"
# The most bytes of events one epoch logs (EPOCH_TAGS at the largest step a varint holds): 341.
EPOCH_BYTES = sum(len(events.frame(events.scalar_event(0.0, 2**63 - 1, tag, 0.0))) for tag in EPOCH_TAGS.values())
# A run's event files together, read back whole: every epoch of the longest run config.py allows
# (100,000 epochs: 34 MB), and 16 MiB more for the header, resume notes and the batch losses
# (48 bytes each: about 350,000 of them; the logger stops logging them there, with a note).
# Reading costs 10-20 us an event (measured), so this bounds reading to ~20 s at worst (a cap
# full of the smallest events); the CRC of one record as large as the cap takes under a second.
MAX_EVENTS_BYTES = MAX_EPOCHS * EPOCH_BYTES + (16 << 20)
HEADER_BYTES = 1 << 20  # the config, the HParams record and each resume's note: a few KB each
_TMP_PREFIX = ".tensorboard-history."  # no "tfevents" in it: TensorBoard never reads a half-written one


def remove_event_files(run_dir: Path) -> None:
    for path in event_files(run_dir):
        if _regular_size(path) is None:
            raise OutputPathError(f"{path} is named like a TensorBoard event file but is not a regular file "
                                  "(a directory, link or device the tool did not write); move it out of the run")
        path.unlink(missing_ok=True)


def _regular_size(path: Path) -> int | None:
    """``path``'s size if it is a regular file (a link is not followed), else None."""
    try:
        status = path.lstat()
    except FileNotFoundError:  # gone since it was listed
        return 0
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def read_events(paths: list[Path], upto_step: int | None = None) -> list[events.Event]:
    """The events of ``paths`` in order, each (tag, step) once, none past ``upto_step``."""
    total = 0  # sizes first: nothing is read of files too large
    for path in paths:
        size = _regular_size(path)
        if size is None:
            raise MlpError(f"event file {path} is not a regular file")
        total += size
    if total > MAX_EVENTS_BYTES:
        raise MlpError(f"the event files {', '.join(map(str, paths))} hold {total >> 20} MiB, more than the "
                       f"{MAX_EVENTS_BYTES >> 20} MiB this tool writes; move them out of the run")
    seen: set[tuple[str | None, int]] = set()
    kept = []
    for path in paths:
        for event in _parsed(path):
            key = (event.tag, event.step)
            if event.tag is None or key in seen or (upto_step is not None and event.step > upto_step):
                continue
            seen.add(key)
            kept.append(event)
    return kept


def _parsed(path: Path) -> list[events.Event]:
    blob = read_record_bytes(path, MAX_EVENTS_BYTES, "event file")
    try:
        return [events.parse_event(data) for data in events.read_records(blob)]
    except events.MalformedEvent as err:
        raise MlpError(f"event file {path} holds a record that is not a TensorBoard event ({err}); move the "
                       "file out of the run (mlp log tensorboard rebuilds the curves from metrics.jsonl)") from None


class TensorBoardLogger(RunLogger):
    """The run's events as it trains. The batch losses stop, with a note at the close, where more
    would take the run's event files past what a resume reads back (``MAX_EVENTS_BYTES``, less
    the epochs still to come): what the tool writes, it can read."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._path: Path | None = None
        self._every = 1
        self._room = 0  # bytes the batch losses may still take
        self._dropped_from: int | None = None  # the first step whose batch loss was not logged

    def begin(self, start: RunStart) -> None:
        run_dir = start.run_dir
        self._every = start.config.run.log_every
        self._room = MAX_EVENTS_BYTES - start.config.train.epochs * EPOCH_BYTES - HEADER_BYTES
        if start.resumed_from is None:
            remove_event_files(run_dir)
        else:
            # a run logged only from this resume on gets its header (config, settings) too
            rewrite_history(run_dir, start.resumed_from.parent, start.resumed_step, start.config.to_dict())
        self._path = run_dir / new_file_name(run_dir)
        self._room -= sum(_regular_size(path) or 0 for path in event_files(run_dir))  # the history rewritten
        self._handle = open(self._path, "ab", buffering=0)  # one write() per record
        now = time.time()
        self._write(events.file_version_event(now))
        if start.resumed_from is None:
            for event in header_events(start.config.to_dict(), now):
                self._write(event)
        elif start.changes:
            self._write(events.text_event(now, start.resumed_step, CHANGES_TAG, changes_text(start.changes)))

    def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
        step = (epoch - 1) * steps_per_epoch + batch
        if step % self._every != 0:
            return
        record = events.scalar_event(time.time(), step, BATCH_TAG, loss)
        self._room -= len(events.frame(record))
        if self._room >= 0:
            self._write(record)
        elif self._dropped_from is None:
            self._dropped_from = step

    def on_epoch(self, row: EpochMetrics, is_best: bool) -> None:
        now = time.time()
        for tag, value in epoch_values(row.to_dict()):
            self._write(events.scalar_event(now, row.step, tag, value))
        if self._handle is not None:
            os.fsync(self._handle.fileno())  # TensorBoard shows the epoch now; a crash keeps it

    def close(self, completed: bool = True) -> str | None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._dropped_from is None:
            return None
        return (f"tensorboard: the batch losses from step {self._dropped_from} on were not logged: with them the "
                f"run's event files would pass {MAX_EVENTS_BYTES >> 20} MiB, what a resume reads back (every epoch's "
                "curves are whole); a larger run.log_every logs fewer")

    def _write(self, event: bytes) -> None:
        """Append one record; a failed write (disk full) is taken back, so the file stays whole."""
        if self._handle is None or self._path is None:
            return
        size = self._handle.tell()
        try:
            self._handle.write(events.frame(event))
        except OSError as err:
            with contextlib.suppress(OSError):
                os.truncate(self._path, size)
            raise naming(err, self._path) from err


def header_events(config: dict[str, dict[str, Any]], wall_time: float) -> list[bytes]:
    """The resolved config as text, and its settings for the HParams dashboard, at step 0."""
    import yaml

    text = "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```"
    settings = {key: _hparam(value) for key, value in flat_settings(config).items()}
    return [events.text_event(wall_time, 0, CONFIG_TAG, text),
            events.plugin_event(wall_time, 0, events.HPARAMS_TAG, "hparams", events.hparams_content(settings))]


def _hparam(value: Any) -> float | str | bool:
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return value if isinstance(value, bool | int | float) else str(value)


def changes_text(changes: dict[str, list[Any]]) -> str:
    lines = ["| setting | before | from here on |", "|---|---|---|"]
    lines += [f"| {key} | {old} | {new} |" for key, (old, new) in changes.items()]
    return "\n".join(lines)


def rewrite_history(run_dir: Path, source_dir: Path, upto_step: int | None,
                    config: dict[str, dict[str, Any]] | None = None) -> Path | None:
    """Make ``run_dir``'s event files one file holding ``source_dir``'s events up to ``upto_step``
    and every epoch of ``run_dir``'s metrics.jsonl (plus, with ``config``, its header events when
    the events lack them). A crash at any point leaves files that a later rewrite reads right."""
    history = read_events(event_files(source_dir), upto_step)
    rows = read_metrics(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else []
    have = {(event.tag, event.step) for event in history}
    pending = [(event.step, event.data) for event in history]
    times = _row_times(run_dir, rows)
    if config is not None and (CONFIG_TAG, 0) not in have:
        pending += [(0, data) for data in header_events(config, times[0] if times else time.time())]
    logged_changes = [event.step for event in history if event.tag == CHANGES_TAG]
    previous_step = 0
    for row, wall_time in zip(rows, times, strict=True):
        step = int(row["step"])  # a resume inside the epoch logged its changes between the two rows
        if row.get("changes") and not any(previous_step <= at <= step for at in logged_changes):
            pending.append((previous_step, events.text_event(wall_time, previous_step, CHANGES_TAG,
                                                             changes_text(row["changes"]))))
        pending += [(step, events.scalar_event(wall_time, step, tag, value))
                    for tag, value in epoch_values(row) if (tag, step) not in have]
        previous_step = step
    pending.sort(key=lambda pair: pair[0])  # stable: each step's events keep their order
    return _replace_event_files(run_dir, [data for _, data in pending])


def _row_times(run_dir: Path, rows: list[dict[str, Any]]) -> list[float]:
    """Wall times for rows that have no event: counted back from when metrics.jsonl was written."""
    if not rows:
        return []
    end = (run_dir / METRICS_FILE).stat().st_mtime - float(rows[-1].get("elapsed") or 0.0)
    times, latest = [], 0.0
    for row in rows:
        latest = max(latest, end + float(row.get("elapsed") or 0.0))
        times.append(latest)
    return times


def _replace_event_files(run_dir: Path, records: list[bytes]) -> Path | None:
    old = event_files(run_dir)
    if not records and not old:
        return None
    target = old[0] if old else run_dir / new_file_name(run_dir)
    data = events.frame(events.file_version_event(time.time())) + b"".join(map(events.frame, records))
    for orphan in run_dir.glob(f"{_TMP_PREFIX}*"):  # a rewrite killed half-way (only files: ours)
        if stat.S_ISREG(orphan.lstat().st_mode):
            orphan.unlink(missing_ok=True)
    tmp = run_dir / f"{_TMP_PREFIX}{os.getpid()}.tmp"
    try:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise OutputPathError(f"{tmp} is in the way (not a file this tool wrote); move it out of the run") from None
    except OSError as err:
        raise naming(err, tmp) from err
    try:
        with open(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise naming(err, target) from err
    for path in old[1:]:  # their events are in target now (read twice, they would count once)
        path.unlink(missing_ok=True)
    return target


def new_file_name(run_dir: Path) -> str:
    """A name that sorts after the run's existing event files (TensorBoard reads them by name)."""
    existing = event_files(run_dir)
    stamps = [int(part) for path in existing for part in path.name.split(".")[3:4]
              if part.isascii() and part.isdigit() and len(part) <= 10]  # ours: seconds, 10 digits
    stamp = max([int(time.time()), *[s + 1 for s in stamps]])
    host = (socket.gethostname().replace(".", "-") or "host")[:64]
    name = f"events.out.tfevents.{stamp:010d}.{host}.{os.getpid()}.mlp"
    if existing and name <= existing[-1].name:
        raise OutputPathError(f"{existing[-1]} is not an event file this tool named, and TensorBoard would read "
                              "it after the new one; rename or remove it")
    return name


def backfill(run_dir: Path, draw_curves: Callable[[Path, Path], None] | None = None) -> int:
    """Write ``run_dir``'s event files from its metrics.jsonl and config.yaml (a run trained
    without ``--log tensorboard``; events already there are kept, none twice). Taken under the
    run's lock, so a run being trained is refused. Returns the number of epochs in the stream."""
    from mlp_cli.errors import MissingFileError
    from mlp_cli.training.run_dir import RunLock

    if not (run_dir / METRICS_FILE).is_file():
        raise MissingFileError(f"{run_dir} is not a run directory: it has no {METRICS_FILE}")
    saved = run_dir / "config.yaml"
    config = _saved_config(saved) if os.path.lexists(saved) else None
    with RunLock(run_dir):
        rewrite_history(run_dir, run_dir, None, config)
    return len(read_metrics(run_dir / METRICS_FILE))


def _saved_config(saved: Path) -> dict[str, dict[str, Any]]:
    """The run's config.yaml, validated as a config file is (it becomes the header events)."""
    from mlp_cli.config_file import MAX_CONFIG_BYTES, load_config

    raw = read_yaml_record(saved, MAX_CONFIG_BYTES, "config")
    try:
        return load_config(base=raw).to_dict()
    except ConfigError as err:
        raise ConfigError(f"config {saved}: {err}") from None
