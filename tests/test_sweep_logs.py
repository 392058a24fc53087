"""`mlp sweep --log tensorboard --log mlflow`: every trial logged, their settings side by side.

Read back with TensorBoard's EventAccumulator (the HParams plugin's record of each trial) and
MLflow's client (a parent run for the sweep, a child per trial)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import runner

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from mlp_cli.cli import app  # noqa: E402
from mlp_cli.training.loggers import events  # noqa: E402
from mlp_cli.training.metrics import read_metrics  # noqa: E402

TINY = ["--config", "default", "--set", "model.hidden=16", "--set", "data.limit=600", "--set", "data.dev_size=200",
        "--set", "train.batch_size=100", "--set", "train.epochs=2", "--set", "optimizer.lr=0.5,1.0"]


def hparams_of(trial_dir: Path) -> tuple[dict[str, float], list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(trial_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")[events.HPARAMS_TAG]
    settings = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    dev = [(e.step, e.value) for e in accumulator.Scalars("dev/accuracy")]
    return {key: value.number_value for key, value in settings.items() if key == "optimizer.lr"}, dev


def hparams_experiment(logdir: Path) -> dict[str, bool]:
    """What TensorBoard's HParams dashboard shows for ``logdir``: each setting, and whether it
    differs between the runs (built by its own backend, from the runs' session records)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer,
                                                            data_provider=provider))
    request = context.RequestContext()
    experiment = backend.experiment_from_metadata(request, "", True, backend.hparams_metadata(request, ""),
                                                  backend.hparams_from_data_provider(request, "", 0))
    assert "dev/accuracy" in {info.name.tag for info in experiment.metric_infos}
    return {info.name: info.differs for info in experiment.hparam_infos}


def test_every_trial_is_logged_with_its_settings(mnist_data_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "sweep"
    done = runner.invoke(app, ["sweep", *TINY, "--jobs", "2", "--data-dir", str(mnist_data_dir), "--out", str(out),
                               "--log", "tensorboard", "--log", "mlflow", "-q"])
    assert done.exit_code == 0, done.output
    trial_dirs = sorted((out / "trials").iterdir())
    assert [d.name for d in trial_dirs] == ["000-lr=0.5", "001-lr=1"]
    for trial_dir, lr in zip(trial_dirs, (0.5, 1.0), strict=True):
        settings, dev = hparams_of(trial_dir)
        assert settings == {"optimizer.lr": lr}
        assert dev == [(r["step"], pytest.approx(r["dev_accuracy"], rel=1e-6)) for r in read_metrics(trial_dir)]
    shown = hparams_experiment(out)  # tensorboard --logdir sweeps/X
    assert shown["optimizer.lr"] is True and shown["model.hidden"] is False
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mlp")
    found = client.search_runs([experiment.experiment_id])
    [parent] = [run for run in found if "mlp.sweep_dir" in run.data.tags]
    children = sorted((run for run in found if run is not parent), key=lambda run: run.data.tags["mlp.trial"])
    assert parent.info.status == "FINISHED" and parent.data.tags["mlp.sweep"] == "sweep"
    assert [c.data.tags["mlp.trial"] for c in children] == ["000-lr=0.5", "001-lr=1"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert [c.data.params["optimizer.lr"] for c in children] == ["0.5", "1.0"]


def test_mlp_log_passes_over_a_trial_with_no_epoch_and_refuses_a_linked_trials_folder(mnist_data_dir: Path,
                                                                                      tmp_path: Path) -> None:
    """A trial that diverged in its first epoch has no metrics.jsonl: named and passed over, the
    others logged. A trials folder replaced by a link is refused before anything is logged."""
    tiny = [arg.replace("optimizer.lr=0.5,1.0", "optimizer.lr=0.5,1e30") for arg in TINY]
    out = tmp_path / "sweep"
    done = runner.invoke(app, ["sweep", *tiny, "--jobs", "1", "--data-dir", str(mnist_data_dir), "--out", str(out),
                               "-q"])
    assert done.exit_code == 0, done.output
    diverged, good = out / "trials" / "001-lr=1e+30", out / "trials" / "000-lr=0.5"
    assert not (diverged / "metrics.jsonl").exists() and (good / "metrics.jsonl").is_file()

    logged = runner.invoke(app, ["log", "tensorboard", str(out)])

    assert logged.exit_code == 0, logged.output
    assert f"{good}: 2 epochs logged to tensorboard" in logged.output
    assert f"{diverged}: nothing to log" in logged.output
    assert list(good.glob("events.out.tfevents.*")) and not list(diverged.glob("events.out.tfevents.*"))

    moved = tmp_path / "elsewhere"
    (out / "trials").rename(moved)
    (out / "trials").symlink_to(moved)
    for event_file in moved.glob("*/events.out.tfevents.*"):
        event_file.unlink()
    refused = runner.invoke(app, ["log", "tensorboard", str(out)])
    assert refused.exit_code == 2 and f"{out / 'trials'} is a symbolic link" in refused.output, refused.output
    assert not list(moved.glob("*/events.out.tfevents.*"))
