"""MLflow logging, read back with MLflow's own client from a temporary local file store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import Losses, closed_port, mlp, synthetic_training_data, train_new, train_resumed

pytest.importorskip("mlflow")  # the "mlflow" extra (mlflow-skinny); CI installs it (make setup)
from mlflow.tracking import MlflowClient  # noqa: E402

from mlp_cli.errors import ConfigError  # noqa: E402
from mlp_cli.training.inputs import TrainingData  # noqa: E402
from mlp_cli.training.loggers.base import EPOCH_TAGS  # noqa: E402
from mlp_cli.training.metrics import read_metrics  # noqa: E402


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return synthetic_training_data()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny: a file store on request
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return MlflowClient(tracking_uri=uri)


def runs_of(client: MlflowClient) -> list[Any]:
    experiment = client.get_experiment_by_name("mlp")
    return [] if experiment is None else client.search_runs([experiment.experiment_id], order_by=["start_time"])


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_metrics_match(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    rows = read_metrics(run_dir)
    for key in EPOCH_TAGS:
        assert history(client, run_id, key) == [(r["step"], r[key]) for r in rows if r.get(key) is not None], key


def test_a_run_logs_its_config_metrics_and_files(tmp_path: Path, data: TrainingData, store: MlflowClient) -> None:
    seen = Losses()
    train_new(tmp_path / "run", data, seen, **{"run.log": ["mlflow"]})
    [run] = runs_of(store)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model.hidden"] == "16" and run.data.params["optimizer.name"] == "sgd"
    assert run.data.params["run.log"] == "mlflow" and run.data.tags["mlp.run_dir"] == str(tmp_path / "run")
    assert_metrics_match(store, run.info.run_id, tmp_path / "run")
    every_third = [(step, loss) for step, loss in sorted(seen.losses.items()) if step % 3 == 0]
    assert history(store, run.info.run_id, "batch_loss") == every_third
    assert {a.path for a in store.list_artifacts(run.info.run_id)} == {"config.yaml", "best.npz"}


def test_a_continued_run_goes_on_in_its_mlflow_run_and_a_branch_starts_one(tmp_path: Path, data: TrainingData,
                                                                           store: MlflowClient) -> None:
    settings = {"run.log": ["mlflow"], "run.checkpoint_every": 1}
    train_new(tmp_path / "run", data, Losses(stop_after=2 * 8 + 5), **settings)
    [cut] = runs_of(store)
    assert cut.info.status == "KILLED"
    train_resumed(tmp_path / "run" / "last.npz", data)
    [run] = runs_of(store)
    assert run.info.status == "FINISHED"
    assert_metrics_match(store, run.info.run_id, tmp_path / "run")
    steps = [step for step, _ in history(store, run.info.run_id, "batch_loss")]
    assert steps == list(range(3, 41, 3))
    train_resumed(tmp_path / "run" / "epoch-002.npz", data, out=tmp_path / "branch", **{"optimizer.lr": 0.5})
    original, branch = runs_of(store)
    assert original.info.run_id == run.info.run_id
    assert branch.data.tags["mlp.parent"] == str(tmp_path / "run" / "epoch-002.npz")
    assert branch.data.tags["mlp.changed.optimizer.lr"] == "1.0 -> 0.5 from step 16"
    assert_metrics_match(store, branch.info.run_id, tmp_path / "branch")


def test_no_store_named_is_one_line_before_any_work(tmp_path: Path, data: TrainingData,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="set MLFLOW_TRACKING_URI"):
        train_new(tmp_path / "run", data, **{"run.log": ["mlflow"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlruns/, no run directory


def test_an_unreachable_server_never_loses_the_training(tmp_path: Path, store: MlflowClient,
                                                        monkeypatch: pytest.MonkeyPatch, mnist_data_dir: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    done = mlp("train", "--hidden", 8, "--epochs", 2, "--set", "data.limit=300", "--set", "data.dev_size=100",
               "--log", "mlflow", "--log", "tensorboard", "--out", tmp_path / "run", "--data-dir", mnist_data_dir, "-q")
    assert done.exit_code == 3, done.output
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("warning: mlflow: could not log to http://127.0.0.1:") and "mlp log mlflow" in line
    assert [row["epoch"] for row in read_metrics(tmp_path / "run")] == [1, 2]
    assert (tmp_path / "run" / "best.npz").exists()


def test_mlp_train_and_mlp_log_send_the_curves_too(tmp_path: Path, store: MlflowClient, mnist_data_dir: Path) -> None:
    done = mlp("train", "--hidden", 8, "--epochs", 2, "--set", "data.limit=300", "--set", "data.dev_size=100",
               "--log", "mlflow", "--out", tmp_path / "run", "--data-dir", mnist_data_dir, "-q")
    assert done.exit_code == 0, done.output
    [run] = runs_of(store)
    assert {a.path for a in store.list_artifacts(run.info.run_id)} == {"config.yaml", "best.npz", "curves.png"}
    (tmp_path / "run" / "mlflow.json").unlink()
    done = mlp("log", "mlflow", tmp_path / "run")
    assert done.exit_code == 0 and "2 epochs logged to mlflow" in done.stdout
    first, again = runs_of(store)
    assert_metrics_match(store, again.info.run_id, tmp_path / "run")
    assert again.data.params == first.data.params
    assert {a.path for a in store.list_artifacts(again.info.run_id)} == {"config.yaml", "best.npz", "curves.png"}
