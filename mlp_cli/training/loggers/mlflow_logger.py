"""An MLflow run for each training run, in the tracking store ``MLFLOW_TRACKING_URI`` names.

Logged: the resolved config as params (``section.key``), every metrics.jsonl number per epoch at
the row's step (and ``batch_loss`` every ``run.log_every`` steps), ``config.yaml``, ``best.npz``
and the learning curves as artifacts, and tags: ``mlp.run_dir``, a branch's ``mlp.parent``, a
sweep's ``mlp.sweep`` and ``mlp.trial`` (its trials are children of the sweep's run), and
``mlp.changed.<key>`` for a setting a resume changed. A continued run goes on in the MLflow run
it started (``mlflow.json`` in the run directory remembers which); a branch or an overwrite
starts a new MLflow run holding the history metrics.jsonl keeps.

MLflow is imported only here, only when asked for (the ``mlflow`` extra: ``mlflow-skinny``). The
tracking store never stops the training: the first failure (a server that cannot be reached)
ends the logging and the MLflow run, as FAILED, and ``close`` returns it as one line.

What is sent is read from the run directory, so it is checked before the store is touched: the
metrics rows, ``mlflow.json``'s place, and best.npz: a regular file, not a link (``O_NOFOLLOW``),
no larger than a checkpoint of the run's network, copied and read as a checkpoint before it is
sent. ``config.yaml`` goes as the validated config, never the raw file; its errors name keys and
types, never values.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_cli.atomic import atomic_write_text, check_destination, file_kind
from mlp_cli.config import SECTIONS, build_config
from mlp_cli.config_file import MAX_CONFIG_BYTES, load_config
from mlp_cli.errors import CheckpointError, ConfigError, MissingFileError, MlpError, UsageError
from mlp_cli.record_files import LinkRefused, NotRegular, open_regular, read_json_record, read_yaml_record
from mlp_cli.training.checkpoint import largest_size, load_checkpoint
from mlp_cli.training.loggers.base import EPOCH_TAGS, RunLogger, RunStart
from mlp_cli.training.metrics import METRICS_FILE, read_metrics
from mlp_cli.training.run_dir import RunLock

if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from mlp_cli.config import Config
    from mlp_cli.training.metrics import EpochMetrics

URI_ENV, EXPERIMENT_ENV, EXPERIMENT = "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "mlp"
RECORD_FILE = "mlflow.json"  # the MLflow run a run directory logs to
NO_URI = ("--log mlflow needs a tracking store: set MLFLOW_TRACKING_URI, e.g. http://localhost:5000 "
          "(an MLflow server), or file:///ABSOLUTE/PATH/mlruns with MLFLOW_ALLOW_FILE_STORE=true")
INSTALL_HINT = "pip install -e '.[mlflow]' (in the mlp checkout), or pip install mlflow-skinny"
BATCH_KEY = "batch_loss"
RESTORE_CONFIG = "put back the config.yaml mlp train wrote there"


def check() -> None:
    """Refused before any work: no store named (nothing is ever written to an ``mlruns/`` of the
    current directory), or no client installed."""
    if not os.environ.get(URI_ENV, "").strip():
        raise ConfigError(NO_URI)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"--log mlflow needs the MLflow client, which is not installed: {INSTALL_HINT}") from None


class _Guarded:
    """Calls to the store, each through ``_guard``: the first failure is kept as one line, and
    after it nothing more is tried."""

    client: MlflowClient | None = None
    run_id: str | None = None
    problem: str | None = None
    advice = ""  # what the user can do about a failure

    def _guard(self, action: Any, *args: Any) -> None:
        if self.problem is not None:
            return
        try:
            action(*args)
            return
        except MlpError as err:  # a record or file of the run, named as such: not the store's fault
            self.problem = f"mlflow: {err}; {self.advice}"
        except Exception as err:  # noqa: BLE001  any failure of the store (network, server, disk): log no more
            if isinstance(err, OSError) or type(err).__module__.startswith("mlflow"):
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                self.problem = f"mlflow: could not log to {os.environ.get(URI_ENV)}: {first}; {self.advice}"
            else:  # not the store's: a bug, named by its type only (its text may quote a record)
                self.problem = f"mlflow: logging stopped by an unexpected {type(err).__name__}; {self.advice}"
        if self.client is not None and self.run_id is not None:  # nothing is left RUNNING
            with contextlib.suppress(Exception):
                self.client.set_terminated(self.run_id, status="FAILED")

    def _connect(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        # a server that is down: give up after one retry, not MLflow's default of minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client = MlflowClient(tracking_uri=os.environ[URI_ENV].strip())
        return self.client


class MlflowLogger(_Guarded, RunLogger):
    def __init__(self, staged: list[Path] | None = None) -> None:
        """``staged``: the artifacts, checked already (``mlp log``); else they are checked at close."""
        self._start: RunStart | None = None
        self._pending: list[tuple[int, float]] = []  # batch losses, sent with the epoch
        self._staged = staged

    def begin(self, start: RunStart) -> None:
        self._start = start
        where = start.run_dir
        self.advice = f"the run itself is complete in {where} (send it later with: mlp log mlflow {where})"
        self._guard(self._open, start)

    def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
        step = (epoch - 1) * steps_per_epoch + batch
        if self._start is not None and step % self._start.config.run.log_every == 0:
            self._pending.append((step, loss))

    def on_epoch(self, row: EpochMetrics, is_best: bool) -> None:
        self._guard(self._log_rows, [row.to_dict()])

    def close(self, completed: bool = True) -> str | None:
        self._guard(self._log_rows, [])
        self._guard(self._finish, completed)
        return self.problem

    def _open(self, start: RunStart) -> None:
        rows = run_records(start.run_dir)  # what can be refused is refused before an MLflow run exists
        check_destination(start.run_dir / RECORD_FILE)
        client, uri = self._connect(), os.environ[URI_ENV].strip()
        self.run_id = _continued_run(start, uri)
        if self.run_id is not None:
            client.update_run(self.run_id, status="RUNNING")
            logged = {metric.step for metric in client.get_metric_history(self.run_id, "train_loss")}
            rows = [row for row in rows if row["step"] not in logged]  # what a kill kept from it
        else:
            run = client.create_run(_experiment(client), run_name=start.run_dir.name, tags=_tags(start))
            self.run_id = run.info.run_id
            _log_params(client, self.run_id, start.config)
            _record(start.run_dir, uri, self.run_id)
        for key, (old, new) in start.changes.items():
            client.set_tag(self.run_id, f"mlp.changed.{key}", f"{old} -> {new} from step {start.resumed_step}")
        self._log_rows(rows)

    def _log_rows(self, rows: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        if self.client is None or self.run_id is None:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(BATCH_KEY, float(loss), now, step) for step, loss in self._pending]
        metrics += epoch_metrics(rows, now)
        for at in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[at:at + 1000])
        self._pending = []

    def _finish(self, completed: bool) -> None:
        if self.client is None or self.run_id is None or self._start is None:
            return
        with tempfile.TemporaryDirectory() as folder:
            start, staged = self._start, self._staged
            if staged is None:  # a training run's: checked now that they are written
                staged = stage_artifacts(start.run_dir, start.config, Path(folder), start.draw_curves)
            for path in staged:
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status="FINISHED" if completed else "KILLED")


class SweepParent(_Guarded):
    """A sweep's MLflow run, whose children are its trials (``mlflow.parentRunId``); the same
    sweep run again goes on in it (``mlflow.json`` in the sweep directory)."""

    advice = "the trials are logged without their sweep's run"

    def __init__(self, directory: Path) -> None:
        """``directory``: where the sweep will be (it is created later, by the sweep itself)."""
        check()
        self._guard(self._open, directory)

    def _open(self, directory: Path) -> None:
        client, uri = self._connect(), os.environ[URI_ENV].strip()
        self.run_id = _recorded_run(directory, uri)
        if self.run_id is None:
            tags = {"mlp.sweep": directory.name, "mlp.sweep_dir": str(directory)}
            self.run_id = client.create_run(_experiment(client), run_name=directory.name, tags=tags).info.run_id
        else:
            client.update_run(self.run_id, status="RUNNING")

    def child_tags(self) -> dict[str, str]:
        return {"mlflow.parentRunId": self.run_id} if self.run_id and self.problem is None else {}

    def close(self, completed: bool, directory: Path) -> str | None:
        """``directory``: the sweep's, as it was created (a taken name gets a -2)."""
        if self.client is not None and self.run_id is not None:
            if directory.is_dir() and self.problem is None:
                self._guard(_record, directory, os.environ[URI_ENV].strip(), self.run_id)
                self._guard(self.client.set_tag, self.run_id, "mlp.sweep_dir", str(directory))
            self._guard(self.client.set_terminated, self.run_id, "FINISHED" if completed else "KILLED")
        return self.problem


def _record(directory: Path, uri: str, run_id: str) -> None:
    atomic_write_text(directory / RECORD_FILE, json.dumps({"tracking_uri": uri, "run_id": run_id}) + "\n")


def _recorded_run(directory: Path, uri: str) -> str | None:
    if not (directory / RECORD_FILE).exists():
        return None
    try:
        record = read_json_record(directory / RECORD_FILE, 4096, "MLflow record")  # a FIFO here must not hang
    except MlpError:
        return None  # unreadable: a new MLflow run
    same = isinstance(record, dict) and record.get("tracking_uri") == uri and isinstance(record.get("run_id"), str)
    return str(record["run_id"]) if same else None


def _continued_run(start: RunStart, uri: str) -> str | None:
    """The MLflow run to go on with: the one this directory logged to, when it continues."""
    return _recorded_run(start.run_dir, uri) if start.mode == "continue" else None


def _experiment(client: MlflowClient) -> str:
    name = os.environ.get(EXPERIMENT_ENV, "").strip() or EXPERIMENT
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id) if found is not None else str(client.create_experiment(name))


def _tags(start: RunStart) -> dict[str, str]:
    tags = {"mlp.run_dir": str(start.run_dir)}
    for key, value in start.tags.items():
        tags[key if key.startswith("mlflow.") else f"mlp.{key}"] = value
    return tags


def _log_params(client: MlflowClient, run_id: str, config: Config) -> None:
    from mlflow.entities import Param

    params = [Param(f"{section}.{key}", _text(value))
              for section, values in config.to_dict().items() for key, value in values.items()]
    for at in range(0, len(params), 100):  # MLflow takes at most 100 params a call
        client.log_batch(run_id, params=params[at:at + 100])


def _text(value: Any) -> str:
    return "null" if value is None else ",".join(map(str, value)) if isinstance(value, list) else str(value)


def backfill(run_dir: Path, draw_curves: Callable[[Path, Path], None] | None = None) -> int:
    """Log a finished run from its files (``mlp log mlflow``): a new MLflow run holding its
    config, every epoch of metrics.jsonl and its artifacts. Everything is read and checked before
    the MLflow run is created. Returns the number of epochs."""
    check()
    if not (run_dir / METRICS_FILE).is_file():
        raise MissingFileError(f"{run_dir} is not a run directory: it has no {METRICS_FILE}")
    with RunLock(run_dir), tempfile.TemporaryDirectory() as folder:
        saved = run_config(run_dir)
        config = saved or load_config()  # a run without config.yaml: the defaults, sent without the file
        epochs = len(run_records(run_dir))
        check_destination(run_dir / RECORD_FILE)
        staged = stage_artifacts(run_dir, config, Path(folder), draw_curves, saved is not None)
        logger = MlflowLogger(staged)
        logger.begin(RunStart(config, run_dir, draw_curves=draw_curves))
        problem = logger.close()
    if problem:
        raise MlpError(problem)
    return epochs


def run_records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows (none without the file), checked by its reader (``training.metrics``:
    a step and the losses in range in each); a bad record is a ``UsageError`` naming it."""
    path = run_dir / METRICS_FILE
    if not os.path.lexists(path):
        return []
    try:
        return read_metrics(path)
    except MlpError as err:
        raise UsageError(f"{err}; mlp log sends only the records mlp train wrote") from None


def epoch_metrics(rows: list[dict[str, Any]], now: int) -> list[Metric]:
    """The rows' numbers as MLflow metrics at each row's step."""
    from mlflow.entities import Metric

    return [Metric(key, float(row[key]), now, int(row["step"]))
            for row in rows for key in EPOCH_TAGS if row.get(key) is not None]


def run_config(run_dir: Path) -> Config | None:
    """The run's config.yaml, validated; None when there is none. Its values are never shown in an
    error (a file in a run directory may hold anything, a secret too)."""
    path = run_dir / "config.yaml"
    if not os.path.lexists(path):
        return None
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ConfigError(f"config {path} is {file_kind(mode)}, not a regular file (mlp follows no link "
                          f"it did not make); {RESTORE_CONFIG}")
    try:
        return load_config(path)
    except ConfigError:
        raise ConfigError(f"config {path} is not a config mlp can log: {_config_fault(path)} (its values "
                          f"are not shown); {RESTORE_CONFIG}") from None


def _config_fault(path: Path) -> str:
    """What is wrong with a config that did not load: mlp's own names and the types found, no text."""
    try:
        raw = read_yaml_record(path, MAX_CONFIG_BYTES, "config")
    except MlpError:
        return f"it is not YAML text of at most {MAX_CONFIG_BYTES >> 10} KiB"
    if not isinstance(raw, dict):
        return f"it holds a {type(raw).__name__}, not a mapping of sections"
    for section, values in raw.items():
        if section not in SECTIONS:
            return "it has a section mlp does not know"
        if values is not None and not isinstance(values, dict):
            return f"section {section} holds a {type(values).__name__}, not a mapping of keys to values"
        known = set(SECTIONS[section].__dataclass_fields__)  # type: ignore[attr-defined]
        for key, value in (values or {}).items():
            if key not in known:
                return f"section {section} has a key mlp does not know"
            try:
                build_config({section: {key: value}})
            except ConfigError:
                return f"{section}.{key} holds a {type(value).__name__} mlp does not accept there"
    return "its settings do not fit together"


def stage_artifacts(run_dir: Path, config: Config, folder: Path, draw_curves: Callable[[Path, Path], None] | None,
                    with_config: bool = True) -> list[Path]:
    """The artifacts, written to ``folder`` (a fresh private directory): ``config`` as config.yaml
    (``with_config``: the run had one), a checked copy of best.npz, and the learning curves."""
    if with_config:
        (folder / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    staged = [folder / "config.yaml"] if with_config else []
    if os.path.lexists(run_dir / "best.npz"):
        staged.append(_checked_checkpoint(run_dir / "best.npz", folder / "best.npz", config.model.hidden))
    if draw_curves is not None and (run_dir / METRICS_FILE).exists():
        with contextlib.suppress(MlpError):  # no matplotlib (the plot extra): the run goes without its picture
            draw_curves(run_dir, folder / "curves.png")
            staged.append(folder / "curves.png")
    return staged


def _checked_checkpoint(source: Path, target: Path, hidden: int) -> Path:
    """``source`` copied to ``target`` (a regular file, never through a link, at most the size a
    checkpoint of the run's network can be), then read as a checkpoint."""
    limit = largest_size(hidden)
    try:
        handle, found = open_regular(source)
    except LinkRefused:
        raise CheckpointError(f"checkpoint {source} is a symbolic link (mlp follows no link it did not make); "
                              "not sent") from None
    except NotRegular as err:
        raise CheckpointError(f"checkpoint {source} is {file_kind(err.mode)}, not a regular file; not sent") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {source} cannot be read ({err.strerror or err}); not sent") from None
    with handle, open(target, "xb") as copy:
        copied = 0
        while found.st_size <= limit and (block := handle.read(min(1 << 20, limit + 1 - copied))):
            copied += len(block)  # counted too: the file may grow while it is copied
            copy.write(block)
        if max(copied, found.st_size) > limit:
            raise CheckpointError(f"checkpoint {source} is larger than a checkpoint of this run's network "
                                  f"({hidden} hidden units) can be ({limit} bytes); not sent")
    try:
        load_checkpoint(target)
    except MlpError as err:
        raise CheckpointError(str(err).replace(str(target), str(source)) + "; not sent") from None
    return target
