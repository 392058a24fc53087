"""MLflow logging, read back with MLflow's own client from a temporary local file store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import Losses, closed_port, mlp, synthetic_training_data, train_new, train_resumed

pytest.importorskip("mlflow")  # the "mlflow" extra (mlflow-skinny); CI installs it (make setup)
from mlflow.tracking import MlflowClient  # noqa: E402

from mlp_cli.config_file import load_config  # noqa: E402
from mlp_cli.errors import ConfigError, OutputPathError  # noqa: E402
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


# -- what mlp log mlflow reads back from a run directory is checked before the store is touched --

SECRET = "SECRET=hunter2"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data: TrainingData) -> Path:
    """A finished run trained without a logger (2 epochs, a last.npz), copied by ``run_copy``."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    settings: dict[str, Any] = {"run.log": [], "train.epochs": 2, "run.checkpoint_every": 1}
    train_new(run_dir, data, **settings)
    return run_dir


def run_copy(finished: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(finished, where / "run")
    (where / "run" / ".lock").unlink(missing_ok=True)
    return where / "run"


def secret_file(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    return tmp_path / "secret.txt"


@pytest.mark.parametrize("planted", ["link to a checkpoint", "link to a secret", "64 MiB sparse", "not a checkpoint"])
def test_log_sends_best_npz_only_from_a_checkpoint_file_it_can_read(tmp_path: Path, finished: Path, planted: str,
                                                                      store: MlflowClient) -> None:
    run_dir = run_copy(finished, tmp_path)
    (run_dir / "best.npz").unlink()
    if planted == "link to a checkpoint":  # a valid checkpoint, but not a file of this run directory
        (run_dir / "best.npz").symlink_to(run_dir / "last.npz")
    elif planted == "link to a secret":
        (run_dir / "best.npz").symlink_to(secret_file(tmp_path))
    elif planted == "64 MiB sparse":  # a 2 GiB one is refused as fast; this one fails fast without the bound
        with open(run_dir / "best.npz", "wb") as handle:
            handle.truncate(64 << 20)
    else:
        (run_dir / "best.npz").write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    done = mlp("log", "mlflow", run_dir)
    assert done.exit_code == 1, done.output
    [line] = done.stderr.strip().splitlines()
    why = {"link to a checkpoint": "is a symbolic link", "link to a secret": "is a symbolic link",
           "64 MiB sparse": "is larger than a checkpoint of this run's network (16 hidden units)",
           "not a checkpoint": "is truncated or corrupt"}[planted]
    assert line.startswith(f"error: checkpoint {run_dir / 'best.npz'} {why}") and line.endswith("not sent"), line
    assert "hunter2" not in done.output
    assert runs_of(store) == []  # nothing was created, nothing copied into the store


@pytest.mark.parametrize(("planted", "why"), [
    ("link", "is a symbolic link, not a regular file"),
    (SECRET, "it holds a str, not a mapping of sections"),
    ("model: {hidden: hunter2}", "model.hidden holds a str mlp does not accept there"),
    ("hunter2: {a: 1}", "it has a section mlp does not know"),
    ("model: {hunter2: 1}", "section model has a key mlp does not know"),
    ("model: [hunter2", "it is not YAML text of at most 64 KiB"),
])
def test_a_bad_config_is_one_line_that_never_shows_its_values(tmp_path: Path, finished: Path, planted: str,
                                                              why: str, store: MlflowClient) -> None:
    run_dir = run_copy(finished, tmp_path)
    (run_dir / "config.yaml").unlink()
    if planted == "link":
        (run_dir / "config.yaml").symlink_to(secret_file(tmp_path))
    else:
        (run_dir / "config.yaml").write_text(planted + "\n")
    done = mlp("log", "mlflow", run_dir)
    assert done.exit_code == 2, done.output
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: config {run_dir / 'config.yaml'} ") and why in line, line
    assert "hunter2" not in done.output
    assert runs_of(store) == []


def test_the_config_artifact_is_the_validated_config_not_the_file(tmp_path: Path, finished: Path,
                                                                 store: MlflowClient) -> None:
    run_dir = run_copy(finished, tmp_path)
    with open(run_dir / "config.yaml", "a") as handle:
        handle.write(f"# {SECRET}\n")  # a comment: the config is valid, its text is not what is sent
    done = mlp("log", "mlflow", run_dir)
    assert done.exit_code == 0, done.output
    [run] = runs_of(store)
    sent = Path(store.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    assert "hunter2" not in sent
    assert load_config(Path(tmp_path) / "config.yaml") == load_config(run_dir / "config.yaml")


@pytest.mark.parametrize(("planted", "why"), [
    ("row", "metrics.jsonl line 1 is not a metrics row"),
    ("record", "mlflow.json is a directory, not a regular file"),
])
def test_a_bad_record_is_named_before_any_mlflow_run_exists(tmp_path: Path, finished: Path, planted: str, why: str,
                                                           store: MlflowClient) -> None:
    run_dir = run_copy(finished, tmp_path)
    if planted == "row":
        (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    else:
        (run_dir / "mlflow.json").mkdir()
    for _ in range(2):  # each attempt: nothing left behind
        done = mlp("log", "mlflow", run_dir)
        assert done.exit_code == 2, done.output
        [line] = done.stderr.strip().splitlines()
        assert why in line and "could not log" not in line, line
    assert runs_of(store) == []


@pytest.mark.parametrize("planted", ["directory", "FIFO"])
def test_a_resume_that_cannot_record_its_mlflow_run_creates_none(tmp_path: Path, finished: Path, planted: str,
                                                                  data: TrainingData, store: MlflowClient) -> None:
    import os

    run_dir = run_copy(finished, tmp_path)
    (run_dir / "mlflow.json").mkdir() if planted == "directory" else os.mkfifo(run_dir / "mlflow.json")
    settings: dict[str, Any] = {"train.epochs": 3, "run.log": ["mlflow"]}
    with pytest.raises(OutputPathError, match=f"mlflow.json is a {planted}"):  # refused before any work
        train_resumed(run_dir / "last.npz", data, **settings)
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]
    assert runs_of(store) == []


@pytest.mark.parametrize(("failure", "said"), [
    ("store", "mlflow: could not log to file:"), ("bug", "mlflow: logging stopped by an unexpected KeyError"),
])
def test_a_failure_after_the_mlflow_run_was_created_ends_it_failed(tmp_path: Path, finished: Path, failure: str,
                                                                  said: str, store: MlflowClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    def broken(*args: Any) -> None:
        raise MlflowException("the store is full") if failure == "store" else KeyError(SECRET)

    monkeypatch.setattr(MlflowClient, "log_artifact", broken)
    done = mlp("log", "mlflow", run_copy(finished, tmp_path))
    assert done.exit_code == 1, done.output
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {said}") and "hunter2" not in line, line
    [run] = runs_of(store)
    assert run.info.status == "FAILED"


def test_a_training_run_whose_best_npz_became_a_link_sends_it_not(tmp_path: Path, finished: Path,
                                                                  store: MlflowClient) -> None:
    from mlp_cli.training.loggers.base import RunStart
    from mlp_cli.training.loggers.mlflow_logger import MlflowLogger

    run_dir = run_copy(finished, tmp_path)
    logger = MlflowLogger()
    logger.begin(RunStart(load_config(run_dir / "config.yaml"), run_dir))
    (run_dir / "best.npz").unlink()
    (run_dir / "best.npz").symlink_to(secret_file(tmp_path))
    problem = logger.close()
    assert problem is not None and "best.npz is a symbolic link" in problem and "hunter2" not in problem
    [run] = runs_of(store)
    assert run.info.status == "FAILED" and store.list_artifacts(run.info.run_id) == []
