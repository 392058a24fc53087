"""Tests for mlp_cli.nn.optimizers and mlp_cli.nn.schedules: update rules against hand-written
references, in-place and dtype-preserving steps, convergence on a quadratic, resumable state, the
schedules, and the registry entries against the code they name."""

from __future__ import annotations

import dataclasses
import inspect
import math
import tracemalloc
from typing import Any

import numpy as np
import pytest

from mlp_cli.config import OptimizerConfig, ScheduleConfig
from mlp_cli.config_file import load_config
from mlp_cli.errors import CheckpointError, ConfigError
from mlp_cli.nn import optimizers, schedules
from mlp_cli.nn.optimizers import Optimizer, make_optimizer
from mlp_cli.nn.registry import OPTIMIZERS, SCHEDULES, listed
from mlp_cli.nn.schedules import make_schedule

SHAPES = {"W1": (5, 4), "b1": (4,), "W2": (4, 3), "b2": (3,)}


def make(name: str, params: dict[str, np.ndarray], **options: float) -> Optimizer:
    """The optimiser ``name`` as a run's config builds it; unset options keep the config's defaults."""
    return make_optimizer(OptimizerConfig(name=name, **options), params)  # type: ignore[arg-type]


def make_params(dtype: type = np.float64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {key: rng.standard_normal(shape).astype(dtype) for key, shape in SHAPES.items()}


def copy_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: p.copy() for key, p in params.items()}


def grad_sequence(n: int, dtype: type = np.float64, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """``n`` fixed gradient dicts, independent of the parameters (enough for update rules)."""
    return [make_params(dtype, seed=seed + i) for i in range(n)]


def run(optimizer: Optimizer, params: dict, grads: list[dict], lr: float = 0.1) -> None:
    for g in grads:
        optimizer.step(params, g, lr)


def assert_params_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key in actual:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


# --- update rules against plain-numpy references (3 steps, float64) ---------------------------

LR, MU, B1, B2, EPS, WD = 0.1, 0.9, 0.9, 0.999, 1e-8, 0.01


def reference(name: str, p0: np.ndarray, grads: list[np.ndarray], decay: bool) -> np.ndarray:
    """The textbook update rules, written out without any of optim.py's in-place tricks."""
    p, v, m, s = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            p = p - LR * g
        elif name == "momentum":
            v = MU * v + g
            p = p - LR * v
        elif name == "nesterov":
            v = MU * v + g
            p = p - LR * (g + MU * v)
        else:
            if name == "adamw" and decay:
                p = p - LR * WD * p
            m = B1 * m + (1 - B1) * g
            s = B2 * s + (1 - B2) * g**2
            m_hat, s_hat = m / (1 - B1**t), s / (1 - B2**t)
            p = p - LR * m_hat / (np.sqrt(s_hat) + EPS)
    return p


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_matches_hand_written_reference(name: str) -> None:
    params, grads = make_params(), grad_sequence(3)
    expected = {
        key: reference(name, params[key], [g[key] for g in grads], decay=key.startswith("W"))
        for key in params
    }
    optimizer = make(name, params, momentum=MU, beta1=B1, beta2=B2, eps=EPS,
                               weight_decay=WD)
    run(optimizer, params, grads, LR)
    for key in params:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-12, atol=1e-14,
                                   err_msg=key)


def test_two_steps_by_hand() -> None:
    """Numbers small enough to check on paper: p0 = 1, g1 = 2, g2 = -1, lr = 0.1, mu = 0.5."""
    g1, g2 = {"b1": np.array([2.0])}, {"b1": np.array([-1.0])}
    expected = {
        "sgd": 1 - 0.1 * 2 - 0.1 * -1,  # 0.9
        "momentum": 1 - 0.1 * 2 - 0.1 * (0.5 * 2 - 1),  # v1 = 2, v2 = 0 -> 0.8
        "nesterov": 1 - 0.1 * (2 + 0.5 * 2) - 0.1 * (-1 + 0.5 * 0),  # -> 0.8
    }
    for name, value in expected.items():
        params = {"b1": np.array([1.0])}
        optimizer = make(name, params, momentum=0.5)
        run(optimizer, params, [g1, g2], lr=0.1)
        assert params["b1"][0] == pytest.approx(value, abs=1e-15), name


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_first_step_moves_each_coordinate_by_lr(name: str) -> None:
    """After one step m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps) ~ lr sign(g),
    whatever the gradient's scale."""
    params = {"b1": np.zeros(3)}
    grads = {"b1": np.array([1e-3, -5.0, 1e3])}
    make(name, params).step(params, grads, 0.01)
    np.testing.assert_allclose(params["b1"], [-0.01, 0.01, -0.01], rtol=1e-5)


# --- in place, dtype, no allocation, grads untouched ------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_is_in_place_and_keeps_dtype(name: str, dtype: type) -> None:
    params = make_params(dtype)
    before = copy_params(params)
    arrays = dict(params)  # the objects the training loop holds
    optimizer = make(name, params, weight_decay=WD)
    # np.float64 scalars would promote float32 arrays; the optimiser must not let them.
    for g in grad_sequence(3, dtype):
        optimizer.step(params, g, np.float64(0.1))  # type: ignore[arg-type]
    for key, p in params.items():
        assert p is arrays[key]
        assert p.dtype == dtype
        assert not np.array_equal(p, before[key])
    for state_name, state in optimizer.state_dict().items():
        expected = np.int64 if state_name == "t" else dtype
        assert state.dtype == expected, state_name


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_does_not_modify_grads(name: str) -> None:
    params, grads = make_params(), grad_sequence(3)
    saved = [copy_params(g) for g in grads]
    run(make(name, params, weight_decay=WD), params, grads)
    for g, g_saved in zip(grads, saved, strict=True):
        assert_params_equal(g, g_saved)


def peak_bytes_of(step: object) -> int:
    tracemalloc.start()
    try:
        step()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_step_allocates_no_array(name: str) -> None:
    """A (784, 300) float32 step: a float64 temporary would be 1.9 MB, a float32 one 0.94 MB;
    the step may allocate neither (numpy reports its buffers to tracemalloc)."""
    rng = np.random.default_rng(0)
    params = {"W1": rng.standard_normal((784, 300), dtype=np.float32)}
    grads = {"W1": rng.standard_normal((784, 300), dtype=np.float32)}
    optimizer = make(name, params, weight_decay=WD)
    optimizer.step(params, grads, 0.1)
    # The probe sees a naive update's temporaries, so a small peak below means something.
    naive = peak_bytes_of(lambda: params["W1"].__isub__(np.float64(0.1) * grads["W1"]))
    assert naive >= 784 * 300 * 8
    peak = peak_bytes_of(lambda: optimizer.step(params, grads, 0.1))
    assert peak < 16 * 1024, f"{name} step allocated {peak} bytes"
    assert params["W1"].dtype == np.float32
    assert all(s.dtype == np.float32 for key, s in optimizer.state_dict().items() if key != "t")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_same_inputs_give_bit_identical_results(name: str) -> None:
    results = []
    for _ in range(2):
        params = make_params(np.float32)
        run(make(name, params, weight_decay=WD), params, grad_sequence(5, np.float32))
        results.append(params)
    assert_params_equal(results[0], results[1])


# --- behaviour ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "lr"), [
    ("sgd", 0.1), ("momentum", 0.02), ("nesterov", 0.02), ("adam", 0.05), ("adamw", 0.05),
])
def test_minimises_a_convex_quadratic(name: str, lr: float) -> None:
    """J = sum_key 0.5 sum a (p - c)^2 with curvatures a in [0.5, 2]; dJ/dp = a (p - c)."""
    params = make_params()
    rng = np.random.default_rng(7)
    a = {key: rng.uniform(0.5, 2.0, p.shape) for key, p in params.items()}
    c = {key: rng.standard_normal(p.shape) for key, p in params.items()}

    def loss() -> float:
        return sum(float(0.5 * (a[k] * (params[k] - c[k]) ** 2).sum()) for k in params)

    initial = loss()
    optimizer = make(name, params)
    grads = {key: np.empty_like(p) for key, p in params.items()}
    for step in range(300):
        for key in params:
            np.multiply(a[key], params[key] - c[key], out=grads[key])
        # Adam hovers around the minimum at a distance ~ lr; decay lr to settle it.
        optimizer.step(params, grads, lr * (1 - step / 300) if name.startswith("adam") else lr)
    assert loss() < 1e-4 * initial, (name, initial, loss())


def test_momentum_zero_is_sgd() -> None:
    grads = grad_sequence(4, np.float32)
    expected = make_params(np.float32)
    run(make("sgd", expected), expected, grads)
    for name in ("momentum", "nesterov"):
        params = make_params(np.float32)
        run(make(name, params, momentum=0.0), params, grads)
        assert_params_equal(params, expected)


def test_adamw_decays_weights_but_not_biases() -> None:
    """With zero gradients Adam's own step is 0 / (0 + eps) = 0, leaving only the decay."""
    params = make_params()
    before = copy_params(params)
    zeros = {key: np.zeros_like(p) for key, p in params.items()}
    optimizer = make("adamw", params, weight_decay=0.5)
    run(optimizer, params, [zeros] * 2, lr=0.1)
    for key in ("W1", "W2"):
        np.testing.assert_allclose(params[key], before[key] * (1 - 0.1 * 0.5) ** 2, rtol=1e-15)
    for key in ("b1", "b2"):
        np.testing.assert_array_equal(params[key], before[key])


def test_weight_decay_is_adamw_only() -> None:
    """adam ignores weight_decay; adamw with weight_decay 0 is adam."""
    grads = grad_sequence(3)
    results = []
    for name, weight_decay in [("adam", 0.0), ("adam", 0.5), ("adamw", 0.0)]:
        params = make_params()
        run(make(name, params, weight_decay=weight_decay), params, grads)
        results.append(params)
    assert_params_equal(results[1], results[0])
    assert_params_equal(results[2], results[0])


# --- state round trip -----------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_round_trip_continues_bit_identically(name: str, tmp_path) -> None:
    grads = grad_sequence(6, np.float32)
    uninterrupted = make_params(np.float32)
    run(make(name, uninterrupted, weight_decay=WD), uninterrupted, grads)

    params = make_params(np.float32)
    first = make(name, params, weight_decay=WD)
    run(first, params, grads[:3])
    # A checkpoint after 3 steps, through an .npz file as checkpoint.py stores it (no pickle).
    arrays: dict[str, Any] = {f"param.{key}": p for key, p in params.items()}
    arrays.update(first.state_dict())
    np.savez(tmp_path / "ckpt.npz", **arrays)
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as ckpt:
        resumed_params = {key: ckpt[f"param.{key}"] for key in SHAPES}
        state = {entry: ckpt[entry] for entry in ckpt.files if not entry.startswith("param.")}
    resumed = make(name, resumed_params, weight_decay=WD)
    resumed.load_state_dict(state)
    run(resumed, resumed_params, grads[3:])
    assert_params_equal(resumed_params, uninterrupted)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_is_a_snapshot(name: str) -> None:
    """Later steps must not change a state_dict already taken (nor a loaded one, its source)."""
    params = make_params()
    optimizer = make(name, params)
    run(optimizer, params, grad_sequence(2))
    snapshot = optimizer.state_dict()
    saved = {key: value.copy() for key, value in snapshot.items()}
    run(optimizer, params, grad_sequence(2, seed=10))
    other = make(name, make_params())
    other.load_state_dict(snapshot)
    run(other, make_params(), grad_sequence(2, seed=10))
    for key in saved:
        np.testing.assert_array_equal(snapshot[key], saved[key])
        assert not np.array_equal(optimizer.state_dict()[key], saved[key])


def test_state_dict_names() -> None:
    params = make_params()
    assert make("sgd", params).state_dict() == {}
    assert set(make("momentum", params).state_dict()) == {
        f"velocity.{key}" for key in SHAPES
    }
    state = make("adamw", params).state_dict()
    assert set(state) == {f"{moment}.{key}" for moment in "mv" for key in SHAPES} | {"t"}
    assert state["t"].shape == () and state["t"].dtype == np.int64


def corrupt(state: dict, key: str, value: object) -> dict:
    return {**state, key: value}


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: {k: v for k, v in s.items() if k != "m.W1"}, "missing"),
    (lambda s: corrupt(s, "velocity.W1", np.zeros((5, 4))), "unexpected"),
    (lambda s: corrupt(s, "m.W1", np.zeros((4, 5))), "m.W1"),
    (lambda s: corrupt(s, "v.b1", np.zeros(4, dtype=np.float32)), "v.b1"),
    (lambda s: corrupt(s, "t", np.array([3])), "'t'"),
    (lambda s: corrupt(s, "t", np.array(3, dtype=np.int32)), "'t'"),
    (lambda s: corrupt(s, "t", np.array(-1, dtype=np.int64)), "t must be >= 0"),
    (lambda s: corrupt(s, "v.W2", -np.ones((4, 3))), "negative"),
    (lambda s: corrupt(s, "m.b2", np.array([0.0, np.nan, 0.0])), "non-finite"),
])
def test_load_state_dict_refuses_mismatches(change, message: str) -> None:
    params = make_params()
    optimizer = make("adam", params)
    run(optimizer, params, grad_sequence(2))
    good = optimizer.state_dict()
    with pytest.raises(CheckpointError, match=message):
        optimizer.load_state_dict(change(good))
    # All or nothing: a refused load leaves the state as it was.
    for key, value in optimizer.state_dict().items():
        np.testing.assert_array_equal(value, good[key])


def test_load_state_dict_refuses_another_optimisers_state() -> None:
    params = make_params()
    momentum_state = make("momentum", params).state_dict()
    for name in ("sgd", "adam"):
        with pytest.raises(CheckpointError, match="does not match"):
            make(name, params).load_state_dict(momentum_state)
    float32_state = make("momentum", make_params(np.float32)).state_dict()
    with pytest.raises(CheckpointError, match="float64"):
        make("momentum", params).load_state_dict(float32_state)


# --- construction errors --------------------------------------------------------------------


def test_unknown_optimizer_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'.*sgd, momentum"):
        make("rmsprop", make_params())


EDGES = {"momentum": 1.0, "beta1": 1.0, "beta2": 1.0, "eps": 0.0}  # the open ends of the ranges


@pytest.mark.parametrize(("name", "key", "value"), [
    (name, key, value)
    for name, spec in OPTIMIZERS.items()
    for key in spec.fields
    for value in (-1e-4, math.nan, EDGES.get(key, -1.0))
])
def test_the_config_refuses_every_out_of_range_hyperparameter(name: str, key: str, value: float) -> None:
    """The config is the one validator: every field an optimiser reads has a checked range."""
    with pytest.raises(ConfigError, match=f"optimizer.{key}"):
        load_config(None, {"optimizer.name": name, f"optimizer.{key}": value})


def test_integer_parameters_are_refused() -> None:
    with pytest.raises(TypeError, match="W1"):
        make("sgd", {"W1": np.zeros((2, 2), dtype=np.int64)})


# --- schedules ------------------------------------------------------------------------------


def schedule(name: str, total_steps: int = 100, steps_per_epoch: int = 10, **fields: Any):  # type: ignore[no-untyped-def]
    """The schedule ``name`` as a run's config builds it, with base_lr 0.5."""
    settings = ScheduleConfig(name=name, **fields)
    return make_schedule(settings, 0.5, total_steps=total_steps, steps_per_epoch=steps_per_epoch)


def test_constant() -> None:
    lr = schedule("constant")
    assert [lr(s) for s in (0, 1, 50, 99, 1000)] == [0.5] * 5


def test_step_decay_at_epoch_boundaries() -> None:
    lr = schedule("step", step_size=2, gamma=0.1)  # 10 steps per epoch: decay every 20 steps
    assert lr(0) == lr(19) == 0.5
    assert lr(20) == lr(39) == pytest.approx(0.05)
    assert lr(40) == pytest.approx(0.005)
    assert lr(99) == pytest.approx(0.5 * 0.1**4)


def test_cosine_endpoints_and_midpoint() -> None:
    lr = schedule("cosine", min_lr=0.1)
    assert lr(0) == 0.5
    assert lr(50) == pytest.approx(0.3)  # halfway: the mean of base_lr and min_lr
    assert lr(99) == pytest.approx(0.1 + 0.4 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    assert lr(100) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    assert (np.diff([lr(s) for s in range(101)]) <= 0).all()  # never rises


@pytest.mark.parametrize("name", SCHEDULES)
def test_linear_warmup(name: str) -> None:
    lr = schedule(name, warmup_epochs=1, steps_per_epoch=4, step_size=5)
    assert [lr(s) for s in range(4)] == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert lr(4) == pytest.approx(0.5)  # handed over to the schedule at its full rate


def test_cosine_after_warmup_spans_the_remaining_steps() -> None:
    lr = schedule("cosine", warmup_epochs=2)  # 20 warmup steps, cosine over steps 20..100
    assert lr(19) == lr(20) == 0.5
    assert lr(60) == pytest.approx(0.25)
    assert lr(100) == pytest.approx(0.0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_return_python_floats(name: str) -> None:
    """A numpy float64 learning rate would not promote a float32 step, but keep it plain."""
    lr = schedule(name, warmup_epochs=1)
    assert all(type(lr(s)) is float for s in (0, 5, 10, 50, 99))


def test_unknown_schedule_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown schedule 'linear'.*constant, step, cosine"):
        schedule("linear")


@pytest.mark.parametrize(("key", "value"), [
    ("schedule.step_size", 0), ("schedule.gamma", 0.0), ("schedule.gamma", 1.5), ("schedule.min_lr", -0.1),
    ("schedule.min_lr", 0.6), ("schedule.warmup_epochs", -1), ("schedule.warmup_epochs", 30),
    ("schedule.plateau_patience", 0), ("schedule.plateau_factor", 1.0), ("schedule.plateau_min_delta", 2.0),
])
def test_the_config_refuses_invalid_schedule_settings(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(None, {"schedule.name": "cosine", "optimizer.lr": 0.5, "train.epochs": 30, key: value})


def test_negative_step_is_a_bug() -> None:
    with pytest.raises(ValueError, match="0-based"):
        schedule("constant")(-1)


# --- the registries against the code they name ---------------------------------------------


def keyword_options(function: Any) -> tuple[str, ...]:
    return tuple(p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_entry_names_its_class_fields_and_state(name: str) -> None:
    spec = OPTIMIZERS[name]
    cls = getattr(optimizers, spec.implementation)
    assert issubclass(cls, Optimizer) and cls.name == name
    assert keyword_options(cls.__init__) == spec.fields
    config_fields = {f.name: f for f in dataclasses.fields(OptimizerConfig)}
    assert all("lo" in config_fields[key].metadata for key in spec.fields)  # each one range-checked
    params = make_params(np.float32)
    arrays = make(name, params).arrays()
    state = [a for key, a in arrays.items() if not key.startswith("scratch.") and key != "t"]
    scratch = [a for key, a in arrays.items() if key.startswith("scratch.")]
    parameter_bytes = sum(p.nbytes for p in params.values())
    assert sum(a.nbytes for a in state) == spec.state_copies * parameter_bytes
    assert sum(a.nbytes for a in scratch) == spec.scratch_copies * parameter_bytes
    assert ("t" in arrays) == spec.step_counter


@pytest.mark.parametrize("name", SCHEDULES)
def test_each_schedule_entry_names_its_builder_and_fields(name: str) -> None:
    spec = SCHEDULES[name]
    assert keyword_options(getattr(schedules, spec.implementation)) == tuple(sorted(spec.fields, key=spec.fields.index))
    assert set(spec.fields) <= {f.name for f in dataclasses.fields(ScheduleConfig)}


def test_config_choices_and_help_come_from_the_registries() -> None:
    from helpers import runner

    from mlp_cli.cli import app

    for section, registry in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        for name in registry:
            assert getattr(load_config(None, {f"{section}.name": name, "data.dev_size": 100}), section).name == name
    help_text = " ".join(runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output.split())
    assert listed(OPTIMIZERS) in help_text
