"""The gradient checker: passes the real gradients, catches wrong ones, names the culprit."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.errors import ConfigError
from mlp_cli.nn.backprop import loss_and_gradients
from mlp_cli.nn.gradcheck import TOLERANCE, check_gradients, gradcheck, objective, random_batch
from mlp_cli.nn.network import PARAM_NAMES, init_params, l2_penalty


@pytest.mark.parametrize("init,l2", [("normal", 0.0), ("xavier", 1e-3)])
def test_real_gradients_pass(init: str, l2: float) -> None:
    result = gradcheck(24, 8, l2, init, seed=1, samples=12)
    assert result.passed
    assert [c.name for c in result.checks] == list(PARAM_NAMES)
    assert [c.checked for c in result.checks] == [12, 12, 12, 10]  # b2 has only 10 entries
    assert [c.shape for c in result.checks] == [(784, 24), (24,), (24, 10), (10,)]
    for check in result.checks:
        assert check.relative_error < TOLERANCE / 10, check
        assert check.max_abs_gradient > 1e-6, check  # the check compared real, non-zero gradients


def test_same_seed_same_numbers() -> None:
    a, b = gradcheck(8, 4, 0.0, "xavier", seed=5, samples=5), gradcheck(8, 4, 0.0, "xavier", seed=5, samples=5)
    assert a.to_dict() == b.to_dict()


def wrong(bug: str):
    """loss_and_gradients with one deliberate mistake."""

    def gradients(params, X, y, l2=0.0, workspace=None):
        loss, grads = loss_and_gradients(params, X, y, l2, workspace)
        grads = grads.copy()
        if bug == "db1 twice":
            grads.b1 *= 2
        elif bug == "no l2":
            grads.W1 -= 2 * l2 * params.W1
        elif bug == "W2 sign flipped":
            grads.W2 = -grads.W2
        return loss, grads

    return gradients


@pytest.mark.parametrize("bug,culprit", [("db1 twice", "b1"), ("no l2", "W1"), ("W2 sign flipped", "W2")])
def test_wrong_gradients_fail_on_the_wrong_parameter(bug: str, culprit: str) -> None:
    result = gradcheck(16, 8, 1e-3, "xavier", seed=2, samples=15, gradient_fn=wrong(bug))
    assert not result.passed
    assert [c.name for c in result.checks if not c.passed] == [culprit]
    failed = next(c for c in result.checks if c.name == culprit)
    assert failed.relative_error > 1e-3
    assert result.to_dict()["passed"] is False


def test_objective_is_the_regularised_loss() -> None:
    rng = np.random.default_rng(0)
    params = init_params(6, rng, "normal", "float64")
    X, y = random_batch(5, rng)
    loss, _ = loss_and_gradients(params, X, y, 0.01)
    assert objective(params, X, y, 0.01) == pytest.approx(loss + l2_penalty(params, 0.01), rel=1e-12)


def test_saturated_units_with_exact_zero_gradients_pass() -> None:
    rng = np.random.default_rng(0)
    params = init_params(4, rng, "normal", "float64")
    params.W1 *= 1e4  # |Z1| in the thousands: sigmoid is exactly 0 or 1, dW1 = db1 = 0 exactly
    X, y = random_batch(3, rng)
    _, checks = check_gradients(params, X * 28, y, rng=rng, samples=10)
    by_name = {c.name: c for c in checks}
    assert by_name["W1"].max_abs_gradient == 0.0 and by_name["W1"].passed
    assert all(c.passed for c in checks)


def test_a_check_whose_dropout_drops_a_whole_layer_is_refused_not_passed() -> None:
    # one hidden unit, one example, 99% dropped: its mask drops it, and W1, b1, W2 would compare
    # exact zeros (a pass that checked nothing); the same with the inputs' rate
    with pytest.raises(ConfigError, match=r"every hidden unit of the batch of 1 is dropped .* lower train\.dropout"):
        gradcheck(1, 1, dropout=0.99, samples=3)
    with pytest.raises(ConfigError, match=r"every input pixel of the batch of 1 is dropped .* train\.input_dropout"):
        gradcheck(3, 1, input_dropout=0.99999, samples=3)  # 1 in 65,536 kept
    assert gradcheck(3, 4, dropout=0.5, input_dropout=0.2, samples=3).passed  # some units kept: checked


def test_gradcheck_cli_refuses_a_vacuous_check_with_exit_2() -> None:
    result = runner.invoke(app, ["gradcheck", "--hidden", "1", "--batch", "1", "--set", "train.dropout=0.99"])
    assert result.exit_code == 2 and "every hidden unit of the batch of 1 is dropped" in result.stderr
    assert "Traceback" not in result.output
