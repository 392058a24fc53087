"""The training loop on small synthetic data: determinism, resume, checkpoints, divergence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_training_data

from mlp_cli.config import Config
from mlp_cli.config_file import load_config
from mlp_cli.data.preprocess import Preprocessing
from mlp_cli.errors import CheckpointError, RunDirError, TrainingError, UsageError
from mlp_cli.nn.network import PARAM_NAMES
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.inputs import TrainingData
from mlp_cli.training.loop import TrainingInterrupted, train
from mlp_cli.training.metrics import read_metrics
from mlp_cli.training.session import new_session, run_session


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return synthetic_training_data()


def config(tmp_path: Path, **overrides) -> Config:
    base = {"model.hidden": 16, "train.epochs": 4, "train.batch_size": 64, "optimizer.lr": 0.2,
            "run.dir": str(tmp_path)}
    base.update(overrides)
    return load_config(None, base)


def run(cfg: Config, data: TrainingData, run_dir: Path, **kwargs):
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(cfg, data, run_dir, **kwargs)


def assert_same_params(a: Path, b: Path) -> None:
    pa, pb = load_checkpoint(a).params, load_checkpoint(b).params
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(pa[name], pb[name])


def test_run_writes_metrics_and_checkpoints(tmp_path: Path, data: TrainingData) -> None:
    cfg = config(tmp_path, **{"run.checkpoint_every": 2})
    result = run(cfg, data, tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["step"] for r in rows] == [8, 16, 24, 32]  # ceil(500 / 64) = 8 steps per epoch
    assert set(rows[0]) >= {"train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "lr",
                            "seconds", "examples_per_second"}
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["best.npz", "epoch-002.npz", "epoch-004.npz", "last.npz"]
    last = load_checkpoint(tmp_path / "last.npz")
    assert last.epoch == 4 and last.step == 32
    assert last.meta["config"] == cfg.to_dict() and last.meta["datasets"] == {"x": "y"}
    assert last.meta["preprocessing"] == {"method": "none", "mean": 0.0, "std": 1.0}
    best = load_checkpoint(tmp_path / "best.npz")
    assert best.epoch == result.best_epoch
    assert best.meta["accuracy"] == max(r["dev_accuracy"] for r in rows)


def test_same_config_and_seed_give_the_same_numbers(tmp_path: Path, data: TrainingData) -> None:
    a = run(config(tmp_path / "a"), data, tmp_path / "a")
    b = run(config(tmp_path / "b"), data, tmp_path / "b")
    timing = ("seconds", "examples_per_second", "elapsed")

    def strip(rows):
        return [{k: v for k, v in r.to_dict().items() if k not in timing} for r in rows]

    assert strip(a.rows) == strip(b.rows)
    assert_same_params(tmp_path / "a" / "last.npz", tmp_path / "b" / "last.npz")
    c = run(config(tmp_path / "c", **{"train.seed": 1}), data, tmp_path / "c")
    assert strip(c.rows) != strip(a.rows)


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
def test_resume_from_epoch_boundary_is_bit_identical(tmp_path: Path, data: TrainingData, optimizer: str) -> None:
    lr = 0.2 if optimizer != "adam" else 0.01
    full = config(tmp_path / "full", **{"optimizer.name": optimizer, "optimizer.lr": lr, "schedule.name": "cosine"})
    run(full, data, tmp_path / "full")
    short = config(tmp_path / "part", **{"optimizer.name": optimizer, "optimizer.lr": lr, "schedule.name": "cosine"})
    # the first two epochs, then resume for the rest (the schedule is that of the full run)
    stops = iter([False] * 15 + [True])
    with pytest.raises(TrainingInterrupted):
        run(short, data, tmp_path / "part", stop_requested=lambda: next(stops, True))
    ckpt = load_checkpoint(tmp_path / "part" / "last.npz")
    assert ckpt.epoch == 2 and ckpt.step == 16
    train(short, data, tmp_path / "part", resume=ckpt)
    assert_same_params(tmp_path / "full" / "last.npz", tmp_path / "part" / "last.npz")
    assert [r["epoch"] for r in read_metrics(tmp_path / "part")] == [1, 2, 3, 4]


def test_resume_mid_epoch_with_shuffling_is_bit_identical(tmp_path: Path, data: TrainingData) -> None:
    run(config(tmp_path / "full", **{"optimizer.name": "momentum"}), data, tmp_path / "full")
    cfg = config(tmp_path / "part", **{"optimizer.name": "momentum"})
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 11  # during epoch 2, after its 3rd step (8 steps/epoch, plus 1 epoch-end check)

    with pytest.raises(TrainingInterrupted) as info:
        run(cfg, data, tmp_path / "part", stop_requested=stop)
    assert info.value.exit_code == 130 and "--resume" in str(info.value)
    ckpt = load_checkpoint(tmp_path / "part" / "last.npz")
    assert ckpt.epoch == 1 and 8 < ckpt.step < 16
    train(cfg, data, tmp_path / "part", resume=ckpt)
    assert_same_params(tmp_path / "full" / "last.npz", tmp_path / "part" / "last.npz")


def test_resume_refuses_a_different_architecture_or_finished_run(tmp_path: Path, data: TrainingData) -> None:
    run(config(tmp_path), data, tmp_path)
    ckpt = load_checkpoint(tmp_path / "last.npz")
    with pytest.raises(CheckpointError, match="model.hidden = 32"):
        train(config(tmp_path, **{"model.hidden": 32, "train.epochs": 8}), data, tmp_path, resume=ckpt)
    with pytest.raises(UsageError, match="already trained 4 of 4"):
        train(config(tmp_path), data, tmp_path, resume=ckpt)


def test_divergence_stops_with_a_clear_error_and_no_nan_is_written(tmp_path: Path, data: TrainingData) -> None:
    run(config(tmp_path, **{"train.epochs": 1}), data, tmp_path)
    good = (tmp_path / "last.npz").read_bytes()
    cfg = config(tmp_path, **{"optimizer.lr": 1e6, "optimizer.name": "sgd", "train.epochs": 3})
    with pytest.raises(TrainingError, match="smaller learning rate") as info:
        train(cfg, data, tmp_path, resume=load_checkpoint(tmp_path / "last.npz"))
    assert "epoch 2" in str(info.value)
    assert (tmp_path / "last.npz").read_bytes() == good
    assert "NaN" not in (tmp_path / "metrics.jsonl").read_text()
    assert all(np.isfinite(v) for r in read_metrics(tmp_path) for v in r.values() if isinstance(v, float))


def test_run_directory_is_never_silently_reused(tmp_path: Path, data: TrainingData) -> None:
    cfg = config(tmp_path / "run", **{"train.epochs": 1})
    with new_session(cfg, "x") as session:
        run_session(session, data)
    run_dir = session.run_dir
    assert load_config(run_dir / "config.yaml") == cfg
    with pytest.raises(RunDirError, match="--overwrite"):
        new_session(cfg, "x")
    with new_session(cfg, "x", overwrite=True) as session:
        (run_dir / "epoch-009.npz").write_bytes(b"old")  # from the run being replaced
        run_session(session, data)
    assert not (run_dir / "epoch-009.npz").exists()
    assert len(read_metrics(run_dir)) == 1  # the replaced run's row is gone, not appended to


def test_metrics_rows_are_json_lines(tmp_path: Path, data: TrainingData) -> None:
    run(config(tmp_path, **{"train.epochs": 2}), data, tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(isinstance(json.loads(line), dict) for line in lines)


def _augmenting(tmp_path: Path, data: TrainingData, **overrides) -> tuple[Config, TrainingData]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (len(data.y_train), 28, 28), dtype=np.uint8)
    prep = Preprocessing("scale", 0.0, 255.0)
    settings = {"augment.enabled": True, "augment.shift": 2.0, "augment.rotate": 10.0, "augment.elastic_alpha": 20.0,
                "schedule.name": "plateau", "schedule.plateau_patience": 1, "early_stopping.enabled": True,
                "early_stopping.patience": 2, "train.epochs": 6, "optimizer.name": "momentum"}
    settings.update(overrides)
    augmented = TrainingData(prep.apply(images), data.y_train, data.X_dev, data.y_dev, prep, images_train=images)
    return config(tmp_path, **settings), augmented


def test_augmentation_plateau_and_early_stopping_resume_bit_identically(tmp_path: Path, data: TrainingData) -> None:
    cfg, augmented = _augmenting(tmp_path / "full", data)
    full = run(cfg, augmented, tmp_path / "full")
    rows = read_metrics(tmp_path / "full")
    assert len({r["lr"] for r in rows}) > 1  # the plateau schedule lowered the rate
    cfg_part, _ = _augmenting(tmp_path / "part", data)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] == 12  # in the middle of epoch 2

    with pytest.raises(TrainingInterrupted):
        run(cfg_part, augmented, tmp_path / "part", stop_requested=stop)
    train(cfg_part, augmented, tmp_path / "part", resume=load_checkpoint(tmp_path / "part" / "last.npz"))
    assert_same_params(tmp_path / "full" / "last.npz", tmp_path / "part" / "last.npz")
    assert [r["lr"] for r in read_metrics(tmp_path / "part")] == [r["lr"] for r in rows]
    assert [r["stopped_early"] for r in rows] == [False] * (len(rows) - 1) + [len(rows) < 6]
    if len(rows) < 6:  # stopped early: resuming is refused with a hint
        assert full.rows[-1].epoch == len(rows)
        with pytest.raises(UsageError, match="stopped early"):
            train(cfg, augmented, tmp_path / "full", resume=load_checkpoint(tmp_path / "full" / "last.npz"))


def test_augmentation_changes_training_and_is_deterministic(tmp_path: Path, data: TrainingData) -> None:
    cfg, augmented = _augmenting(tmp_path / "a", data, **{"early_stopping.enabled": False, "train.epochs": 2})
    run(cfg, augmented, tmp_path / "a")
    cfg_b, _ = _augmenting(tmp_path / "b", data, **{"early_stopping.enabled": False, "train.epochs": 2})
    run(cfg_b, augmented, tmp_path / "b")
    assert_same_params(tmp_path / "a" / "last.npz", tmp_path / "b" / "last.npz")
    a_ = augmented
    plain = TrainingData(a_.X_train, a_.y_train, a_.X_dev, a_.y_dev, a_.preprocessing)
    run(cfg_b, plain, tmp_path / "c")
    a, c = load_checkpoint(tmp_path / "a" / "last.npz"), load_checkpoint(tmp_path / "c" / "last.npz")
    assert not np.array_equal(a.params.W1, c.params.W1)
