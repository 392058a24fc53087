"""Dropout: the masks, the gradients through them, and runs that use them (resume included)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_training_data

from mlp_cli.config import Config
from mlp_cli.config_file import load_config
from mlp_cli.errors import ConfigError
from mlp_cli.nn.backprop import backprop, loss_and_gradients
from mlp_cli.nn.dropout import Masks, draw_masks
from mlp_cli.nn.gradcheck import check_gradients, gradcheck, random_batch
from mlp_cli.nn.network import INPUTS, PARAM_NAMES, init_params
from mlp_cli.nn.workspace import Workspace
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.inputs import TrainingData
from mlp_cli.training.loop import TrainingInterrupted, train
from mlp_cli.training.metrics import read_metrics
from mlp_cli.training.step import Dropout

F64 = np.dtype(np.float64)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return synthetic_training_data()


def masks_for(batch: int, hidden: int, input_rate: float, hidden_rate: float, seed: int = 3) -> Masks:
    return draw_masks(np.random.default_rng(seed), batch, INPUTS, hidden, input_rate, hidden_rate, F64, Workspace())


@pytest.mark.parametrize("input_rate,hidden_rate", [(0.2, 0.0), (0.0, 0.5), (0.2, 0.5), (0.0, 0.0)])
@pytest.mark.parametrize("batch,hidden", [(1, 5), (7, 20), (64, 33)])
def test_the_tuned_step_equals_the_reference_through_the_masks(
    batch: int, hidden: int, input_rate: float, hidden_rate: float
) -> None:
    rng = np.random.default_rng(batch + hidden)
    params = init_params(hidden, rng, dtype="float64")
    params.b1[:] = rng.standard_normal(hidden)
    X, y = random_batch(batch, rng)
    masks = masks_for(batch, hidden, input_rate, hidden_rate)
    ref_loss, ref = backprop(params, X, y, 1e-3, masks)
    loss, grads = loss_and_gradients(params, X, y, 1e-3, Workspace(), masks)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(grads[name], ref[name], rtol=1e-10, atol=1e-14)
    if input_rate or hidden_rate:  # the masks change the step
        _, plain = backprop(params, X, y, 1e-3)
        assert not np.allclose(plain.W1, ref.W1)


def test_masks_drop_the_fraction_asked_and_keep_the_expectation() -> None:
    masks = masks_for(400, 500, 0.2, 0.5)
    assert masks.M0 is not None and masks.M1 is not None
    for mask, rate in ((masks.M0, 0.2), (masks.M1, 0.5)):
        values = np.unique(mask)
        assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1.0 / (1.0 - rate), rel=1e-4)
        assert abs((mask == 0).mean() - rate) < 0.01
        assert abs(mask.mean() - 1.0) < 0.02  # inverted dropout: E[M] = 1
    assert masks.input_scale * (1 - round(0.2 * 65536) / 65536) == pytest.approx(1.0)  # E[M] = 1 exactly
    only_hidden = masks_for(4, 10, 0.0, 0.3)
    assert only_hidden.inputs is None and only_hidden.hidden is not None


@pytest.mark.parametrize("input_rate,hidden_rate", [(0.2, 0.5), (0.0, 0.3), (0.4, 0.0)])
def test_the_gradients_through_dropout_match_finite_differences(input_rate: float, hidden_rate: float) -> None:
    result = gradcheck(24, 8, 1e-3, "xavier", seed=1, samples=12, dropout=hidden_rate, input_dropout=input_rate)
    assert result.passed, [c.relative_error for c in result.checks]
    assert result.to_dict()["dropout"] == hidden_rate


@pytest.mark.parametrize("forgotten", ["inputs", "hidden"])
def test_a_gradient_that_ignores_a_mask_fails_the_check(forgotten: str) -> None:
    rng = np.random.default_rng(4)
    params = init_params(16, rng, dtype="float64")
    X, y = random_batch(8, rng)
    masks = masks_for(8, 16, 0.3, 0.5)

    def wrong(p, X, y, l2, masks: Masks):
        kept = replace(masks, inputs=None) if forgotten == "inputs" else replace(masks, hidden=None)
        return backprop(p, X, y, l2, kept)

    _, checks = check_gradients(params, X, y, rng=rng, samples=15, gradient_fn=wrong, masks=masks)
    assert not all(c.passed for c in checks)


def config(run_dir: Path, **overrides: object) -> Config:
    settings = {"model.hidden": 16, "train.epochs": 3, "train.batch_size": 64, "optimizer.lr": 0.5,
                "optimizer.name": "momentum", "train.dropout": 0.3, "train.input_dropout": 0.2,
                "run.dir": str(run_dir)}
    return load_config(None, {**settings, **overrides})


def last_params(run_dir: Path) -> dict[str, np.ndarray]:
    params = load_checkpoint(run_dir / "last.npz").params
    return {name: params[name] for name in PARAM_NAMES}


def test_masks_are_a_function_of_the_batch_position(tmp_path: Path) -> None:
    X = np.ones((64, INPUTS), dtype=np.float32)
    a, b = Dropout(config(tmp_path), Workspace()), Dropout(config(tmp_path), Workspace())
    first, again = a.masks(2, 5, X), b.masks(2, 5, X)
    assert first is not None and again is not None
    np.testing.assert_array_equal(first.M1, again.M1)
    np.testing.assert_array_equal(first.M0, again.M0)
    held = first.M1
    other = b.masks(2, 6, X)
    assert other is not None and not np.array_equal(other.M1, held)
    assert Dropout(config(tmp_path, **{"train.dropout": 0.0, "train.input_dropout": 0.0}), Workspace()).masks(
        1, 0, X) is None


def test_dropout_changes_training_deterministically(tmp_path: Path, data: TrainingData) -> None:
    for name, overrides in (("a", {}), ("b", {}), ("plain", {"train.dropout": 0.0, "train.input_dropout": 0.0})):
        train(config(tmp_path / name, **overrides), data, tmp_path / name)
    a, b, plain = (last_params(tmp_path / name) for name in ("a", "b", "plain"))
    assert all(np.array_equal(a[name], b[name]) for name in PARAM_NAMES)
    assert not np.allclose(a["W1"], plain["W1"])
    meta = load_checkpoint(tmp_path / "a" / "last.npz").meta
    assert meta["config"]["train"]["dropout"] == 0.3 and "dropout" in meta["rng"]


def test_a_run_with_dropout_resumed_mid_epoch_equals_the_uninterrupted_one(tmp_path: Path, data: TrainingData) -> None:
    train(config(tmp_path / "full"), data, tmp_path / "full")
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] == 11  # inside epoch 2 (8 steps per epoch)

    with pytest.raises(TrainingInterrupted):
        train(config(tmp_path / "part"), data, tmp_path / "part", stop_requested=stop)
    assert load_checkpoint(tmp_path / "part" / "last.npz").step == 11
    train(config(tmp_path / "part"), data, tmp_path / "part", resume=load_checkpoint(tmp_path / "part" / "last.npz"))
    full, part = last_params(tmp_path / "full"), last_params(tmp_path / "part")
    assert all(np.array_equal(full[name], part[name]) for name in PARAM_NAMES)
    timing = ("seconds", "examples_per_second", "elapsed", "changes")
    strip = [{k: v for k, v in row.items() if k not in timing} for row in read_metrics(tmp_path / "full")]
    assert strip == [{k: v for k, v in row.items() if k not in timing} for row in read_metrics(tmp_path / "part")]


def test_dropout_may_change_on_resume_and_the_change_is_recorded(tmp_path: Path, data: TrainingData) -> None:
    train(config(tmp_path, **{"train.epochs": 1}), data, tmp_path)
    more = config(tmp_path, **{"train.epochs": 2, "train.dropout": 0.5})
    train(more, data, tmp_path, resume=load_checkpoint(tmp_path / "last.npz"))
    changes = load_checkpoint(tmp_path / "last.npz").meta["changes"]
    assert changes[-1]["settings"]["train.dropout"] == [0.3, 0.5]


@pytest.mark.parametrize("key", ["train.dropout", "train.input_dropout"])
@pytest.mark.parametrize("value", [1.0, -0.1])
def test_a_rate_outside_0_1_is_refused(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, {key: value})
