"""The Python API in mlp_cli/__init__.py: train, load a model, predict and evaluate, load data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlp_cli
from mlp_cli.reports.evaluate import evaluate, load_split

SMALL = {"model.hidden": 16, "train.epochs": 2, "train.batch_size": 100, "data.limit": 2000,
         "data.dev_size": 1000}


@pytest.fixture(scope="module")
def run(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> mlp_cli.Run:
    out = tmp_path_factory.mktemp("api") / "nested" / "run"  # not there yet: train makes it
    return mlp_cli.train({"optimizer": {"lr": 0.5}}, overrides=SMALL, out=out, data_dir=mnist_data_dir)


def test_import_is_light_and_names_the_api() -> None:
    code = "import sys, mlp_cli; print(sorted(m for m in ('numpy', 'yaml', 'rich') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    assert {"train", "load_model", "load_dataset", "Model", "Run", "MlpError"} <= set(dir(mlp_cli))


def test_train_returns_the_run_it_wrote(run: mlp_cli.Run, mnist_data_dir: Path) -> None:
    assert [row["epoch"] for row in run.rows] == [1, 2]
    assert run.best_accuracy == max(row["dev_accuracy"] for row in run.rows)
    assert run.rows[run.best_epoch - 1]["dev_accuracy"] == run.best_accuracy
    model = run.model()
    assert model.path == run.best_checkpoint and model.checkpoint.config["optimizer"]["lr"] == 0.5
    _, X, y = load_split(model.checkpoint, "dev", data_dir=mnist_data_dir)
    assert evaluate(model.checkpoint, X, y, "dev").accuracy == run.best_accuracy


def test_a_model_predicts_and_evaluates_raw_pixels(run: mlp_cli.Run, mnist_data_dir: Path) -> None:
    model = mlp_cli.load_model(run.run_dir)  # a run directory means its best.npz
    images, labels = mlp_cli.load_dataset("mnist", "test", data_dir=mnist_data_dir)
    P = model.predict_proba(images[:50])
    assert P.shape == (50, 10) and np.allclose(P.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(model.predict(images[:50]), P.argmax(axis=1))
    one = model.predict(images[3])  # one image, and the same pixels as floats in rows
    assert one.shape == (1,) and one[0] == model.predict(images[3].reshape(784).astype(float))[0]
    result = model.evaluate(images, labels)
    assert result.examples == 10_000 and result.accuracy == np.mean(model.predict(images) == labels)
    assert result.accuracy > 0.8 and 0 < result.loss < 1


@pytest.mark.parametrize("bad", [np.zeros((2, 27, 27)), np.array(["x"] * 784), np.zeros((3,))])
def test_bad_images_are_one_clear_error(run: mlp_cli.Run, bad: np.ndarray) -> None:
    with pytest.raises(mlp_cli.MlpError, match="images must be"):
        mlp_cli.load_model(run.best_checkpoint).predict(bad)


def test_train_never_reuses_a_run_directory(run: mlp_cli.Run, mnist_data_dir: Path) -> None:
    with pytest.raises(mlp_cli.MlpError, match="already exists"):
        mlp_cli.train(None, overrides=SMALL, out=run.run_dir, data_dir=mnist_data_dir)


def test_train_takes_a_config_name(mnist_data_dir: Path, tmp_path: Path) -> None:
    run = mlp_cli.train("cs229", overrides={**SMALL, "train.epochs": 1}, out=tmp_path / "r", data_dir=mnist_data_dir)
    saved = run.model().checkpoint.config
    assert (saved["model"]["init"], saved["optimizer"]["lr"], saved["model"]["hidden"]) == ("normal", 5.0, 16)


def test_on_epoch_reports_each_row_and_resume_continues_the_same_run(mnist_data_dir: Path, tmp_path: Path) -> None:
    seen: list[dict] = []
    first = mlp_cli.train(None, overrides=SMALL, out=tmp_path / "r", data_dir=mnist_data_dir, on_epoch=seen.append)
    assert seen == first.rows  # each epoch's row, as metrics.jsonl records it, as it happens

    more: list[dict] = []
    resumed = mlp_cli.resume(first.last_checkpoint, epochs=3, data_dir=mnist_data_dir, on_epoch=more.append)

    assert resumed.run_dir == first.run_dir and [row["epoch"] for row in resumed.rows] == [1, 2, 3]
    assert [row["epoch"] for row in more] == [3] and resumed.rows[:2] == first.rows
    with pytest.raises(mlp_cli.MlpError, match="already trained 3 of 3 epochs"):
        mlp_cli.resume(first.last_checkpoint, epochs=3, data_dir=mnist_data_dir)
    with pytest.raises(mlp_cli.MlpError, match="is a run directory; resume its latest state"):
        mlp_cli.resume(first.run_dir, epochs=4)
    with pytest.raises(mlp_cli.MlpError, match="resume's epochs must be a whole number, got '4'"):
        mlp_cli.resume(first.last_checkpoint, epochs="4")  # type: ignore[arg-type]
    with pytest.raises(mlp_cli.MlpError, match="on_epoch must be a function"):
        mlp_cli.train(None, overrides=SMALL, out=tmp_path / "s", on_epoch="print")  # type: ignore[arg-type]


def test_a_model_repr_says_what_it_is_never_its_weights(run: mlp_cli.Run) -> None:
    model = run.model()
    shown = repr(model)
    best = run.rows[run.best_epoch - 1]["dev_accuracy"]
    assert shown == (f"Model(hidden=16, dataset='mnist', dtype=float32, accuracy={100 * best:.2f}% at epoch "
                     f"{run.best_epoch}, path={str(run.best_checkpoint)!r})")
    assert "array" not in shown and len(shown) < 300
