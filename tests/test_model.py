"""The network: gradients against finite differences, the tuned step and evaluation against
their plain references, the workspace, stable numerics, learning."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from mlp_cli.nn.backprop import backprop, loss_and_gradients
from mlp_cli.nn.evaluation import loss_and_accuracy, plain_loss_and_accuracy
from mlp_cli.nn.loss import cross_entropy
from mlp_cli.nn.network import (
    PARAM_NAMES,
    Params,
    forward,
    init_params,
    l2_penalty,
    log_softmax,
    log_softmax_backward,
    logits,
    sigmoid,
    sigmoid_grad_from_output,
    softmax,
    softmax_backward,
)
from mlp_cli.nn.workspace import Workspace


def small_problem(seed: int = 0, B: int = 7, d: int = 6, h: int = 5, k: int = 4):
    rng = np.random.default_rng(seed)
    params = init_params(h, rng, "normal", "float64", inputs=d, classes=k)
    params.b1[:] = rng.standard_normal(h)
    params.b2[:] = rng.standard_normal(k)
    X = rng.standard_normal((B, d)) * 2
    y = rng.integers(0, k, B)
    return params, X, y


def objective(params: Params, X: np.ndarray, y: np.ndarray, l2: float) -> float:
    """J_reg computed independently of loss_and_gradients: forward pass only."""
    return float(cross_entropy(logits(params, X), y).mean()) + l2_penalty(params, l2)


@pytest.mark.parametrize("gradients", [loss_and_gradients, backprop])
@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_gradients_match_central_finite_differences(gradients, l2: float) -> None:
    params, X, y = small_problem()
    _, grads = gradients(params, X, y, l2=l2)
    eps = 1e-6
    for name in PARAM_NAMES:
        array = params[name]
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            plus = objective(params, X, y, l2)
            array[index] = saved - eps
            minus = objective(params, X, y, l2)
            array[index] = saved
            numeric[index] = (plus - minus) / (2 * eps)
        analytic = grads[name]
        assert analytic.shape == array.shape
        rel = np.abs(analytic - numeric).max() / max(np.abs(analytic).max(), np.abs(numeric).max())
        assert rel < 1e-6, (name, rel)


def test_reported_loss_excludes_the_l2_penalty() -> None:
    params, X, y = small_problem()
    plain, _ = loss_and_gradients(params, X, y, l2=0.0)
    reg, grads = loss_and_gradients(params, X, y, l2=0.3)
    assert reg == pytest.approx(plain)
    _, g0 = loss_and_gradients(params, X, y, l2=0.0)
    # biases are not penalised, weights gain 2 lambda W
    np.testing.assert_allclose(grads.b1, g0.b1)
    np.testing.assert_allclose(grads.W2 - g0.W2, 0.6 * params.W2, rtol=1e-12, atol=1e-12)


def test_loss_is_mean_cross_entropy() -> None:
    params, X, y = small_problem()
    loss, _ = loss_and_gradients(params, X, y)
    P = forward(params, X)
    assert loss == pytest.approx(-np.mean(np.log(P[np.arange(len(y)), y])), rel=1e-12)


def test_workspace_reuse_gives_identical_results() -> None:
    params, X, y = small_problem()
    ws = Workspace()
    first_loss, first = loss_and_gradients(params, X, y, 0.01, ws)
    first = first.copy()
    second_loss, second = loss_and_gradients(params, X, y, 0.01, ws)
    assert first_loss == second_loss
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(first[name], second[name])


def test_float32_by_default_and_no_upcast() -> None:
    params = init_params(30, np.random.default_rng(1))
    assert params.dtype == np.float32
    X = np.random.default_rng(2).standard_normal((16, 784)).astype(np.float32)
    y = np.arange(16) % 10
    _, grads = loss_and_gradients(params, X, y, l2=1e-4)
    assert all(grads[name].dtype == np.float32 for name in PARAM_NAMES)


def test_same_seed_same_init_and_float64_matches_float32_draw() -> None:
    a = init_params(20, np.random.default_rng(5), "normal", "float64")
    b = init_params(20, np.random.default_rng(5), "normal", "float32")
    np.testing.assert_array_equal(a.W1.astype(np.float32), b.W1)
    assert np.all(a.b1 == 0) and a.W1.std() == pytest.approx(1.0, abs=0.05)
    x = init_params(20, np.random.default_rng(5), "xavier", "float64")
    limit = np.sqrt(6 / (784 + 20))
    assert np.abs(x.W1).max() <= limit and np.abs(x.W1).max() > 0.9 * limit


def test_no_warnings_with_cs229_init_on_raw_pixels() -> None:
    rng = np.random.default_rng(3)
    params = init_params(300, rng, "normal", "float32")
    X = rng.integers(0, 256, (200, 784)).astype(np.float32)  # un-normalised inputs
    y = rng.integers(0, 10, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = loss_and_gradients(params, X, y)
        P = forward(params, X)
    assert np.isfinite(loss)
    assert all(np.isfinite(grads[name]).all() for name in PARAM_NAMES)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5)


def test_sigmoid_saturates_without_subnormals_or_overflow() -> None:
    z = np.array([-1e4, -180, -90, -20, 0, 20, 90, 180, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = sigmoid(z)
    tiny = np.finfo(np.float32).tiny
    assert not np.any((a > 0) & (a < tiny)), "subnormal activations"
    assert a[0] == 0.0 and a[-1] == 1.0 and a[4] == 0.5
    np.testing.assert_allclose(sigmoid(np.linspace(-8, 8, 33)), 1 / (1 + np.exp(-np.linspace(-8, 8, 33))), rtol=1e-12)
    s = sigmoid(np.array([0.3]))
    np.testing.assert_allclose(sigmoid_grad_from_output(s), s * (1 - s))


def test_softmax_and_log_softmax_are_stable() -> None:
    Z = np.array([[1000.0, 0.0, -1000.0], [-5.0, -5.0, -5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P = softmax(Z)
        L = log_softmax(Z)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert np.isfinite(L).all() and L[0, 2] == pytest.approx(-2000.0)
    np.testing.assert_allclose(P[1], 1 / 3)


def test_loss_falls_on_a_small_synthetic_problem() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 784)).astype(np.float32)
    y = (X @ rng.standard_normal((784, 10))).argmax(axis=1)
    params = init_params(32, rng)
    first, _ = loss_and_accuracy(params, X, y)
    for _ in range(60):
        _, grads = loss_and_gradients(params, X, y)
        for name in PARAM_NAMES:
            params[name][...] -= 0.5 * grads[name]
    last, accuracy = loss_and_accuracy(params, X, y)
    assert last < 0.5 * first
    assert accuracy > 0.9


def test_loss_and_accuracy_blocks_agree_with_one_pass() -> None:
    params, X, y = small_problem(B=25)
    whole = loss_and_accuracy(params, X, y, block=1000)
    blocks = loss_and_accuracy(params, X, y, block=4)
    assert whole[0] == pytest.approx(blocks[0], rel=1e-12)
    assert whole[1] == blocks[1]
    assert whole[1] == np.mean(logits(params, X).argmax(1) == y)


def test_evaluation_stays_finite_when_the_folded_bias_would_overflow() -> None:
    rng = np.random.default_rng(0)
    params = init_params(300, rng, "xavier", "float32")
    params.W2[:] = 3e36  # the column sums of W2 / 2 overflow float32: inf - inf in the tanh form
    params.b1[:] = -100.0  # every hidden unit off: the true scores are just b2
    X = rng.standard_normal((50, 784)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    with np.errstate(all="raise"):
        loss, accuracy = loss_and_accuracy(params, X, y, block=16)
    assert loss == pytest.approx(float(cross_entropy(logits(params, X), y).mean()), rel=1e-6)
    assert accuracy == np.mean(logits(params, X).argmax(axis=1) == y)


# --- the tuned step and evaluation against the plain references --------------------------------


@pytest.mark.parametrize("l2", [0.0, 0.01])
@pytest.mark.parametrize(("B", "d", "h", "k"), [(1, 784, 30, 10), (7, 6, 5, 4), (64, 784, 100, 10), (300, 20, 3, 2)])
def test_tuned_step_equals_the_reference_in_float64(B: int, d: int, h: int, k: int, l2: float) -> None:
    params, X, y = small_problem(seed=B, B=B, d=d, h=h, k=k)
    expected_loss, expected = backprop(params, X, y, l2)
    workspace = Workspace()
    for _ in range(2):  # and again in the same workspace: nothing left over from the first call
        loss, grads = loss_and_gradients(params, X, y, l2, workspace)
        assert loss == pytest.approx(expected_loss, rel=1e-13)
        for name in PARAM_NAMES:
            np.testing.assert_allclose(grads[name], expected[name], rtol=1e-11, atol=1e-15, err_msg=name)


@pytest.mark.parametrize(("n", "block"), [(1, 2000), (25, 4), (25, 1000), (300, 64)])
def test_tuned_evaluation_equals_the_plain_one_in_float64(n: int, block: int) -> None:
    params, X, y = small_problem(seed=n, B=n, d=30, h=12, k=10)
    loss, accuracy = loss_and_accuracy(params, X, y, block=block, workspace=Workspace())
    expected_loss, expected_accuracy = plain_loss_and_accuracy(params, X, y)
    assert loss == pytest.approx(expected_loss, rel=1e-13)
    assert accuracy == expected_accuracy


def test_softmax_derivatives_and_the_p_minus_y_shortcut() -> None:
    rng = np.random.default_rng(4)
    Z, dP = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    # softmax_backward against central differences of J = sum(dP * softmax(Z))
    eps, numeric = 1e-6, np.zeros_like(Z)
    for index in np.ndindex(Z.shape):
        step = np.zeros_like(Z)
        step[index] = eps
        numeric[index] = ((dP * softmax(Z + step)).sum() - (dP * softmax(Z - step)).sum()) / (2 * eps)
    np.testing.assert_allclose(softmax_backward(softmax(Z), dP), numeric, rtol=1e-7, atol=1e-9)
    # J = -(1/B) sum_i log P[i, y_i]: through log-softmax, dL = -Y / B gives (P - Y) / B; through
    # softmax, dP = -Y / (B P) gives the same
    y = np.array([0, 3, 1, 1, 2])
    Y, P = np.eye(4)[y], softmax(Z)
    np.testing.assert_allclose(log_softmax_backward(P, -Y / 5), (P - Y) / 5, atol=1e-15)
    np.testing.assert_allclose(softmax_backward(P, -Y / (5 * P)), (P - Y) / 5, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_step_allocates_nothing_that_grows_with_the_batch(dtype: str) -> None:
    """200,000 rows: one per-row temporary would be >= 800 kB; numpy's own fixed iterator
    buffers (64 kB per float32 operand pair) are all a warm step may allocate."""
    rng = np.random.default_rng(0)
    params = init_params(4, rng, "xavier", dtype, inputs=8)
    X = rng.standard_normal((200_000, 8)).astype(dtype)
    y = rng.integers(0, 10, 200_000)
    workspace = Workspace()
    _, first = loss_and_gradients(params, X, y, 0.1, workspace)
    tracemalloc.start()
    try:
        _, second = loss_and_gradients(params, X, y, 0.1, workspace)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"a warm step allocated {peak} bytes"
    assert all(second[name] is first[name] for name in PARAM_NAMES)  # the same buffers, rewritten


def test_workspace_reallocates_only_when_the_shapes_change() -> None:
    params, X, y = small_problem(B=20)
    workspace = Workspace()
    _, full = loss_and_gradients(params, X, y, 0.0, workspace)
    _, again = loss_and_gradients(params, X, y, 0.0, workspace)
    assert again.W1 is full.W1
    held = set(map(id, workspace.arrays().values()))
    loss_and_gradients(params, X[:7], y[:7], 0.0, workspace)  # a shorter last batch
    assert held != set(map(id, workspace.arrays().values()))
    assert workspace.arrays()["StepBuffers.A1"].shape == (7, params.hidden)
