"""A resumed run is the run that was never interrupted: weights, best model, schedule, stopping.

The run below is chosen so that each piece of state matters after the cut: the plateau schedule
has already halved the rate, dev accuracy peaks at the cut and falls after it (so a forgotten
best accuracy would let a worse epoch overwrite best.npz), and early stopping ends the run later.
The preconditions are asserted, so a change of data or defaults cannot make the test vacuous.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_training_data

from mlp_cli.config import Config
from mlp_cli.config_file import load_config
from mlp_cli.nn.network import PARAM_NAMES
from mlp_cli.training.batches import Batches
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.inputs import TrainingData
from mlp_cli.training.loop import Observer, TrainingInterrupted, train
from mlp_cli.training.metrics import read_metrics

TIMINGS = ("seconds", "examples_per_second", "elapsed", "changes")


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return synthetic_training_data()


def config(run_dir: Path, **overrides: object) -> Config:
    settings = {"model.hidden": 16, "train.epochs": 12, "train.batch_size": 64, "optimizer.lr": 2.0,
                "schedule.name": "plateau", "schedule.plateau_patience": 1, "schedule.plateau_factor": 0.5,
                "early_stopping.enabled": True, "early_stopping.patience": 3, "run.dir": str(run_dir)}
    return load_config(None, {**settings, **overrides})


class StopAt(Observer):
    """Asks the loop to stop once ``steps`` steps are done (checked between steps and epochs)."""

    def __init__(self, steps: int) -> None:
        self.steps, self.done = steps, 0

    def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
        self.done += 1

    def requested(self) -> bool:
        return self.done >= self.steps


def same_params(a: Path, b: Path) -> bool:
    pa, pb = load_checkpoint(a).params, load_checkpoint(b).params
    return all(np.array_equal(pa[name], pb[name]) for name in PARAM_NAMES)


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


@pytest.fixture(scope="module")
def uninterrupted(data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("full")
    result = train(config(run_dir), data, run_dir)
    rows = result.rows
    # preconditions: the rate was cut before epoch 5 ends, dev accuracy peaks at 5 and falls after
    assert rows[4].lr < rows[0].lr and result.best_epoch == 5
    assert min(r.dev_accuracy for r in rows[5:]) < rows[4].dev_accuracy
    assert rows[-1].stopped_early and len(rows) < 12
    return run_dir


@pytest.mark.parametrize("cut_steps", [5 * 8, 5 * 8 + 3], ids=["after-epoch-5", "inside-epoch-6"])
def test_a_resumed_run_equals_the_uninterrupted_one(
    data: TrainingData, uninterrupted: Path, tmp_path: Path, cut_steps: int
) -> None:
    stop = StopAt(cut_steps)  # 500 examples in batches of 64: 8 steps per epoch
    with pytest.raises(TrainingInterrupted):
        train(config(tmp_path), data, tmp_path, observer=stop, stop_requested=stop.requested)
    assert load_checkpoint(tmp_path / "last.npz").step == cut_steps

    result = train(config(tmp_path), data, tmp_path, resume=load_checkpoint(tmp_path / "last.npz"))

    full_best, cut_best = load_checkpoint(uninterrupted / "best.npz"), load_checkpoint(tmp_path / "best.npz")
    assert (cut_best.epoch, result.best_epoch) == (full_best.epoch, 5)
    assert same_params(uninterrupted / "best.npz", tmp_path / "best.npz")
    assert same_params(uninterrupted / "last.npz", tmp_path / "last.npz")
    full_last, cut_last = load_checkpoint(uninterrupted / "last.npz"), load_checkpoint(tmp_path / "last.npz")
    for key in ("plateau", "early_stopping", "best_epoch", "best_accuracy", "epoch", "step"):
        assert cut_last.meta[key] == full_last.meta[key], key
    assert without_timings(read_metrics(tmp_path)) == without_timings(read_metrics(uninterrupted))
    resumed_epoch = read_metrics(tmp_path)[5]  # epoch 6: whole, or from its 4th batch on
    seen = 500 - (cut_steps - 5 * 8) * 64
    assert round(resumed_epoch["examples_per_second"] * resumed_epoch["seconds"]) == seen


def test_each_epoch_sees_its_own_order(data: TrainingData, tmp_path: Path) -> None:
    batches = Batches(data, config(tmp_path))
    first = np.concatenate([y for _, _, y in batches.epoch(1)])
    second = np.concatenate([y for _, _, y in batches.epoch(2)])
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)
    again = np.concatenate([y for _, _, y in Batches(data, config(tmp_path)).epoch(1)])
    np.testing.assert_array_equal(first, again)  # and the same order for the same seed and epoch


def test_shuffling_changes_the_weights(data: TrainingData, tmp_path: Path) -> None:
    settings = {"train.epochs": 2, "early_stopping.enabled": False, "schedule.name": "constant"}
    train(config(tmp_path / "on", **settings), data, tmp_path / "on")
    train(config(tmp_path / "off", **settings, **{"train.shuffle": False}), data, tmp_path / "off")
    assert not same_params(tmp_path / "on" / "last.npz", tmp_path / "off" / "last.npz")
