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
ends the logging, and ``close`` returns it as one line.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_cli.atomic import atomic_write_text
from mlp_cli.errors import ConfigError, MlpError
from mlp_cli.record_files import read_json_record
from mlp_cli.training.loggers.base import EPOCH_TAGS, RunLogger, RunStart
from mlp_cli.training.metrics import METRICS_FILE, read_metrics

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from mlp_cli.config import Config
    from mlp_cli.training.metrics import EpochMetrics

URI_ENV, EXPERIMENT_ENV, EXPERIMENT = "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "mlp"
RECORD_FILE = "mlflow.json"  # the MLflow run a run directory logs to
NO_URI = ("--log mlflow needs a tracking store: set MLFLOW_TRACKING_URI, e.g. http://localhost:5000 "
          "(an MLflow server), or file:///ABSOLUTE/PATH/mlruns with MLFLOW_ALLOW_FILE_STORE=true")
INSTALL_HINT = "pip install -e '.[mlflow]' (in the mlp checkout), or pip install mlflow-skinny"
BATCH_KEY = "batch_loss"


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
        except Exception as err:  # noqa: BLE001  any failure of the store (network, server, disk): log no more
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            self.problem = f"mlflow: could not log to {os.environ.get(URI_ENV)}: {first}; {self.advice}"

    def _connect(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        # a server that is down: give up after one retry, not MLflow's default of minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client = MlflowClient(tracking_uri=os.environ[URI_ENV].strip())
        return self.client


class MlflowLogger(_Guarded, RunLogger):
    def __init__(self) -> None:
        self._start: RunStart | None = None
        self._pending: list[tuple[int, float]] = []  # batch losses, sent with the epoch

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
        client, uri = self._connect(), os.environ[URI_ENV].strip()
        self.run_id = _continued_run(start, uri)
        rows = read_metrics(start.run_dir / METRICS_FILE) if (start.run_dir / METRICS_FILE).exists() else []
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
        metrics += [Metric(key, float(row[key]), now, int(row["step"]))
                    for row in rows for key in EPOCH_TAGS if row.get(key) is not None]
        for at in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[at:at + 1000])
        self._pending = []

    def _finish(self, completed: bool) -> None:
        if self.client is None or self.run_id is None or self._start is None:
            return
        run_dir = self._start.run_dir
        for name in ("config.yaml", "best.npz"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if self._start.draw_curves is not None and (run_dir / METRICS_FILE).exists():
            with tempfile.TemporaryDirectory() as folder:
                picture = Path(folder) / "curves.png"
                try:
                    self._start.draw_curves(run_dir, picture)
                except MlpError:  # no matplotlib (the plot extra): the run goes without its picture
                    pass
                else:
                    self.client.log_artifact(self.run_id, str(picture))
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
                _record(directory, os.environ[URI_ENV].strip(), self.run_id)
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
    config, every epoch of metrics.jsonl and its artifacts. Returns the number of epochs."""
    from mlp_cli.config_file import load_config
    from mlp_cli.errors import MissingFileError

    check()
    if not (run_dir / METRICS_FILE).is_file():
        raise MissingFileError(f"{run_dir} is not a run directory: it has no {METRICS_FILE}")
    from mlp_cli.training.run_dir import RunLock

    config = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else load_config()
    logger = MlflowLogger()
    with RunLock(run_dir):
        logger.begin(RunStart(config, run_dir, draw_curves=draw_curves))
        problem = logger.close()
    if problem:
        raise MlpError(problem)
    return len(read_metrics(run_dir / METRICS_FILE))
