"""The loss unit: its gradient against its value, its tuned forms against it in float64, the
loss of a uniform prediction, and a second loss reaching the reference backprop and the
gradient check through one registry entry."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mlp_cli.nn.backprop import StepBuffers, backprop
from mlp_cli.nn.gradcheck import gradcheck
from mlp_cli.nn.loss import (
    CROSS_ENTROPY,
    LOSSES,
    Loss,
    cross_entropy,
    cross_entropy_gradient,
    inplace_softmax_minus_onehot,
    shifted_cross_entropy_sum,
)
from mlp_cli.nn.network import init_params, logits, softmax, softmax_backward
from mlp_cli.nn.workspace import Workspace
from mlp_cli.training.step import DivergenceGuard


def scores(B: int, k: int, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, k)) * scale, rng.integers(0, k, B)


def squared_error(Z2: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A second loss for the tests: sum_j (P[i, j] - Y[i, j])^2 per example, P = softmax(Z2)."""
    P = softmax(Z2)
    return ((P - np.eye(Z2.shape[1])[y]) ** 2).sum(axis=1)


def squared_error_gradient(Z2: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dJ/dZ2 of its mean: dJ/dP = 2 (P - Y) / B carried through the softmax (no P - Y shortcut)."""
    P = softmax(Z2)
    return softmax_backward(P, 2 * (P - np.eye(Z2.shape[1])[y]) / len(y))


SQUARED_ERROR = Loss(squared_error, squared_error_gradient)


@pytest.mark.parametrize("unit", [CROSS_ENTROPY, SQUARED_ERROR], ids=["cross_entropy", "squared_error"])
def test_the_gradient_is_the_derivative_of_the_value(unit: Loss) -> None:
    Z2, y = scores(6, 4, 2.0)
    eps, numeric = 1e-6, np.zeros_like(Z2)
    for index in np.ndindex(Z2.shape):
        step = np.zeros_like(Z2)
        step[index] = eps
        numeric[index] = (unit.value(Z2 + step, y) - unit.value(Z2 - step, y)) / (2 * eps)
    np.testing.assert_allclose(unit.gradient(Z2, y), numeric, rtol=1e-7, atol=1e-10)


def test_the_cross_entropy_is_minus_the_log_of_the_true_class_probability() -> None:
    Z2, y = scores(5, 10, 3.0)
    P = softmax(Z2)
    np.testing.assert_allclose(cross_entropy(Z2, y), -np.log(P[np.arange(5), y]), rtol=1e-13)
    np.testing.assert_allclose(cross_entropy_gradient(Z2, y), (P - np.eye(10)[y]) / 5, rtol=1e-13)
    assert LOSSES == {"cross_entropy": CROSS_ENTROPY}


@pytest.mark.parametrize(("B", "k", "scale"), [(1, 10, 1.0), (7, 4, 3.0), (300, 10, 1.0), (50, 2, 80.0)])
def test_the_fused_kernel_equals_the_plain_loss_in_float64(B: int, k: int, scale: float) -> None:
    Z2, y = scores(B, k, scale, seed=B)
    buf = Workspace().get(StepBuffers, {"B": B, "d": 1, "h": 1, "k": k}, np.dtype(np.float64))
    fused = Z2.copy(order="F")  # the kernel works in place, on a column-major buffer
    J = inplace_softmax_minus_onehot(fused, y, buf)
    assert J == pytest.approx(CROSS_ENTROPY.value(Z2, y), rel=1e-13)
    np.testing.assert_allclose(fused, CROSS_ENTROPY.gradient(Z2, y), rtol=1e-12, atol=1e-17)


def test_the_fused_kernel_refuses_a_label_past_the_classes() -> None:
    """A label of k would put the one-hot 1 outside Z2's memory: an IndexError, nothing written."""
    Z2, y = scores(6, 10, 1.0)
    y[3] = 10
    buf = Workspace().get(StepBuffers, {"B": 6, "d": 1, "h": 1, "k": 10}, np.dtype(np.float64))
    with pytest.raises(IndexError):
        inplace_softmax_minus_onehot(Z2.copy(order="F"), y, buf)


@pytest.mark.parametrize(("n", "k", "scale"), [(1, 10, 1.0), (25, 10, 4.0), (40, 3, 80.0)])
def test_the_evaluation_sum_equals_the_plain_loss_in_float64(n: int, k: int, scale: float) -> None:
    Z2, y = scores(n, k, scale, seed=n)
    shifted = Z2 - Z2.max(axis=1, keepdims=True)  # what the evaluation hands it
    total = shifted_cross_entropy_sum(shifted, y, np.empty_like(Z2), np.arange(n))
    assert total == pytest.approx(cross_entropy(Z2, y).sum(), rel=1e-13)


def test_the_divergence_floor_is_the_loss_of_a_uniform_prediction(tmp_path: Path) -> None:
    assert CROSS_ENTROPY.uniform(10) == math.log(10) and CROSS_ENTROPY.uniform(2) == math.log(2)
    assert SQUARED_ERROR.uniform(10) == pytest.approx(0.9)  # (1 - 1/10)^2 + 9 (1/10)^2
    assert DivergenceGuard(tmp_path, 10).floor == CROSS_ENTROPY.uniform(10)


def test_a_second_loss_is_one_unit_and_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered, it is what the reference backprop differentiates and what the gradient check
    differentiates numerically; a mismatch of the two is caught."""
    monkeypatch.setitem(LOSSES, "squared_error", SQUARED_ERROR)
    rng = np.random.default_rng(3)
    params = init_params(5, rng, "xavier", "float64", inputs=6, classes=4)
    X, y = rng.standard_normal((7, 6)), rng.integers(0, 4, 7)
    J, grads = backprop(params, X, y, loss_name="squared_error")
    J_ce, grads_ce = backprop(params, X, y)
    assert J == SQUARED_ERROR.value(logits(params, X), y)
    assert J != J_ce and not np.allclose(grads.W2, grads_ce.W2)
    with_squared_error = partial(backprop, loss_name="squared_error")
    assert gradcheck(12, 8, 1e-3, seed=2, samples=10, gradient_fn=with_squared_error,
                     loss_name="squared_error").passed
    assert not gradcheck(12, 8, 1e-3, seed=2, samples=10, gradient_fn=with_squared_error).passed
    assert not gradcheck(12, 8, 1e-3, seed=2, samples=10, loss_name="squared_error").passed
