"""The step's speed-ups change no number: compiled kernels, thread counts and the sigmoid's form.

- ``nn.fused``'s compiled updates (numba, optional) are bit-identical to the numpy forms in
  ``nn.optimizers`` and ``nn.backprop``, in float32 and float64 (skipped without numba).
- ``nn.parallel`` splits elementwise work in row blocks: one thread or two, the parameters after
  the same training steps are bit-identical, whichever kernels run.
- The sigmoid's two forms agree to the dtype's rounding, and the form is a fixed property of the
  process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from mlp_cli.config_file import load_config
from mlp_cli.nn import fused, parallel
from mlp_cli.nn.backprop import (
    SIGMOID_FORMS,
    StepBuffers,
    add_penalty,
    backprop,
    hidden_backward,
    hidden_into,
    inplace_sigmoid,
    loss_and_gradients,
    output_delta,
    sigmoid_form,
    thin,
    thin_into,
)
from mlp_cli.nn.dropout import draw_masks
from mlp_cli.nn.network import init_params
from mlp_cli.nn.optimizers import make_optimizer
from mlp_cli.nn.workspace import Workspace
from mlp_cli.training.state import TrainState
from mlp_cli.training.step import Dropout, train_step
from tests.helpers import need_numba

OPTIMIZERS = {"sgd": {}, "momentum": {"optimizer.momentum": 0.9}, "nesterov": {"optimizer.momentum": 0.9},
              "adam": {}, "adamw": {"optimizer.weight_decay": 0.01}}


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch):
    """Row blocks even for the small arrays of a test, and the thread count restored afterwards."""
    monkeypatch.setattr(parallel, "MIN_BLOCK_ENTRIES", 8)
    yield
    parallel.set_threads(None)


def arrays(dtype: type, seed: int, shape: tuple[int, ...] = (37, 23)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal(shape).astype(dtype), "b1": rng.standard_normal(shape[1]).astype(dtype)}


def run_updates(name: str, dtype: type, kernels: str, monkeypatch: pytest.MonkeyPatch,
                penalty: float = 0.0) -> dict[str, np.ndarray]:
    """Five updates of ``name`` from fixed parameters and gradients; the parameters and state after.
    The gradients must come out untouched, the L2 term (``penalty``) included. They arrive as
    training hands them: refilled in the same arrays (three steps), then in others (two), which the
    optimiser's cached flat views of the arrays must follow."""
    monkeypatch.setenv(fused.KERNELS_VARIABLE, kernels)
    settings = load_config(None, {"optimizer.name": name, **OPTIMIZERS[name]}).optimizer
    params = arrays(dtype, 0)
    optimizer = make_optimizer(settings, params)
    buffers = [arrays(dtype, 0), arrays(dtype, 0)]
    for step in range(5):
        grads = buffers[step // 3]
        for key, g in arrays(dtype, step + 1).items():
            np.copyto(grads[key], g)
        optimizer.step(params, grads, 0.1 / (step + 1), penalty=penalty)
        for key, g in arrays(dtype, step + 1).items():
            np.testing.assert_array_equal(grads[key], g, err_msg=f"the step wrote to the gradient {key}")
    return {**params, **optimizer.state_dict()}


@pytest.mark.parametrize("penalty", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_compiled_update_is_bit_identical_to_numpy(name: str, dtype: type, penalty: float,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    need_numba()
    reference = run_updates(name, dtype, "numpy", monkeypatch, penalty)
    compiled = run_updates(name, dtype, "", monkeypatch, penalty)
    assert fused.kernel_name() == "numba"
    assert reference.keys() == compiled.keys()
    for key in reference:
        assert compiled[key].dtype == reference[key].dtype
        np.testing.assert_array_equal(compiled[key], reference[key], err_msg=key)
    if penalty:  # the L2 term changed the weights, and only the weights
        plain = run_updates(name, dtype, "numpy", monkeypatch)
        assert not np.array_equal(plain["W1"], reference["W1"])
        np.testing.assert_array_equal(plain["b1"], reference["b1"])


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_l2_term_in_the_update_equals_it_in_the_gradient(name: str, kernels: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """train_step hands the L2 term to the optimiser (one pass with the update): the parameters
    are bit for bit those of adding 2 lambda W to the gradients first, as the derivation does."""
    if kernels == "numba":
        need_numba()
    monkeypatch.setenv(fused.KERNELS_VARIABLE, "" if kernels == "numba" else "numpy")
    l2 = 1e-2
    settings = load_config(None, {"optimizer.name": name, **OPTIMIZERS[name]}).optimizer
    rng = np.random.default_rng(8)
    X, y = rng.standard_normal((16, 784)).astype(np.float32), rng.integers(0, 10, 16)
    results = []
    for fold in (False, True):
        params = init_params(12, np.random.default_rng(2), dtype=np.float32)
        optimizer = make_optimizer(settings, params.as_dict())
        workspace = Workspace()
        for _ in range(3):
            _, grads = loss_and_gradients(params, X, y, 0.0 if fold else l2, workspace)
            optimizer.step(params.as_dict(), grads.as_dict(), 0.05, penalty=2 * l2 if fold else 0.0)
        results.append({**params.as_dict(), **optimizer.state_dict()})
    for key in results[0]:
        np.testing.assert_array_equal(results[1][key], results[0][key], err_msg=key)


@pytest.mark.parametrize("B", [1, 2, 50, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_output_delta_is_bit_identical_to_numpy(B: int, dtype: type,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """J and dZ2 = (P - Y) / B with subnormals flushed: the compiled passes around numpy's exp
    and log give numpy's bits, for confident rows (subnormal and zero entries), rows holding NaN
    or an infinity, and one row (which numpy sums in another order: the numpy form runs; 64
    draws, as the two orders often agree)."""
    need_numba()
    monkeypatch.setenv(fused.KERNELS_VARIABLE, "")  # the suite runs with MLP_KERNELS=numpy
    assert fused.kernels() is not None
    for seed in range(64 if B == 1 else 1):
        rng = np.random.default_rng([B, seed])
        Z2 = (rng.standard_normal((B, 10)) * rng.choice([1.0, 40.0, 300.0], (B, 1))).astype(dtype)
        if B > 2:
            Z2[1, 3], Z2[2, 0], Z2[2, 5] = np.nan, np.inf, -np.inf
        y = rng.integers(0, 10, B)
        buf = Workspace().get(StepBuffers, {"B": B, "d": 1, "h": 1, "k": 10}, np.dtype(dtype))
        results = []
        for fast in (None, fused.kernels()):
            out = Z2.copy(order="F")
            with np.errstate(all="ignore"):
                results.append((output_delta(out, y, buf, fast), out))
        (J, reference), (J_fast, compiled) = results
        assert J_fast == J or (np.isnan(J) and np.isnan(J_fast))
        np.testing.assert_array_equal(compiled, reference)
        assert np.array_equal(np.signbit(compiled), np.signbit(reference))
    if B == 1000:  # the data reach every branch: zeros from the flush, and a NaN row
        assert (reference == 0).any() and np.isnan(reference).any()


def test_the_compiled_output_delta_refuses_a_label_past_the_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    need_numba()
    monkeypatch.setenv(fused.KERNELS_VARIABLE, "")
    assert fused.kernels() is not None
    y = np.array([0, 10, 3])
    buf = Workspace().get(StepBuffers, {"B": 3, "d": 1, "h": 1, "k": 10}, np.dtype(np.float32))
    with pytest.raises(IndexError, match="label 10 of row 1"):
        output_delta(np.zeros((3, 10), np.float32, order="F"), y, buf, fused.kernels())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_l2_term_is_bit_identical_to_numpy(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    need_numba()
    grad, weight = arrays(dtype, 1)["W1"], arrays(dtype, 2)["W1"] * 50
    results = []
    for kernels in ("numpy", ""):
        monkeypatch.setenv(fused.KERNELS_VARIABLE, kernels)
        out = grad.copy()
        add_penalty(out, weight, 2.0 * 1e-4, np.empty_like(out), fused.kernels())
        results.append(out)
    np.testing.assert_array_equal(results[1], results[0])
    assert not np.array_equal(results[0], grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_the_compiled_hidden_backward_is_bit_identical_to_numpy(rate: float, dtype: type,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    need_numba()
    rng = np.random.default_rng(4)
    A1 = rng.random((33, 17)).astype(dtype)
    A1[0, :3] = (0.0, 1.0, 0.5)
    dA1 = (rng.standard_normal((33, 17)) * 10.0**rng.integers(-30, 3, (33, 17))).astype(dtype)
    masks = draw_masks(np.random.default_rng(5), 33, 784, 17, 0.0, rate, dtype, Workspace())
    results = []
    for kernels in ("numpy", ""):
        monkeypatch.setenv(fused.KERNELS_VARIABLE, kernels)
        dZ1 = dA1.copy()
        hidden_backward(A1, dZ1, masks, np.empty_like(dZ1), fused.kernels())
        results.append(dZ1)
    np.testing.assert_array_equal(results[1], results[0])
    expected = dA1 * (masks.M1 if rate else 1) * A1 * (1 - A1)
    np.testing.assert_allclose(results[0], expected, rtol=1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_hidden_layer_is_bit_identical_to_numpy(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training pass's A1 = sigmoid(X W1 + b1) in the tanh form: compiled passes around numpy's
    tanh, the same bits as the five numpy passes (which evaluation keeps)."""
    need_numba()
    from mlp_cli.nn import backprop as module

    monkeypatch.setitem(module._chosen, "sigmoid", "tanh")
    monkeypatch.setenv(fused.KERNELS_VARIABLE, "")
    params = init_params(17, np.random.default_rng(9), dtype=dtype)
    params.b1[:] = np.random.default_rng(10).standard_normal(17).astype(dtype)
    X = (np.random.default_rng(11).standard_normal((33, 784)) * 3).astype(dtype)
    results = []
    for fast in (None, fused.kernels()):
        A1 = np.full((33, 17), np.nan, dtype=dtype)
        hidden_into(params, X, A1, fast)
        results.append(A1)
    assert fused.kernels() is not None
    np.testing.assert_array_equal(results[1], results[0])
    assert 0.01 < results[0].std() and np.all((results[0] >= 0) & (results[0] <= 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_thinning_is_bit_identical_to_numpy(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    need_numba()
    X = np.random.default_rng(6).standard_normal((21, 784)).astype(dtype)
    masks = draw_masks(np.random.default_rng(7), 21, 784, 5, 0.3, 0.0, dtype, Workspace())
    assert masks.inputs is not None
    results = []
    for kernels in ("numpy", ""):
        monkeypatch.setenv(fused.KERNELS_VARIABLE, kernels)
        results.append(thin(X, masks.inputs, masks.input_scale, np.full_like(X, np.nan), fused.kernels()))
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[0], thin_into(X, masks.inputs, masks.input_scale, np.empty_like(X)))
    assert (results[0] == 0).mean() == pytest.approx(0.3, abs=0.03)


def test_without_numba_or_when_told_the_numpy_forms_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fused.KERNELS_VARIABLE, "numpy")
    assert fused.kernels() is None and fused.kernel_name() == "numpy"
    monkeypatch.setenv(fused.KERNELS_VARIABLE, "")
    monkeypatch.setattr(fused, "_state", {})
    monkeypatch.setitem(sys.modules, "numba", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "mlp_cli.nn.compiled", None)
    assert fused.kernels() is None and fused.kernel_name() == "numpy"
    assert run_updates("nesterov", np.float32, "", monkeypatch)["W1"].dtype == np.float32


def test_the_warm_up_starts_numba_on_a_thread_of_its_own() -> None:
    """``mlp train`` calls it before loading the data. In a fresh process: the thread imports the
    kernels and loads one for float32, and leaves ``kernels()``'s cache to the caller's thread."""
    need_numba()
    code = ("import sys; from mlp_cli.nn import fused\n"
            "thread = fused.warm_up(); assert thread is not None and thread.daemon; thread.join(120)\n"
            "compiled = sys.modules['mlp_cli.nn.compiled']\n"
            "print(len(compiled.shift_halve.signatures), len(compiled.momentum.signatures), fused._state)\n"
            "assert isinstance(fused.kernels(), fused.Kernels) and fused.warm_up() is None")
    env = {k: v for k, v in os.environ.items() if k != fused.KERNELS_VARIABLE}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0", "{}"]


def test_no_warm_up_where_the_numpy_forms_are_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fused.KERNELS_VARIABLE, "numpy")
    monkeypatch.setattr(fused, "_state", {})
    assert fused.warm_up() is None and "kernels" not in fused._state


def test_row_blocks_cover_every_row_once() -> None:
    for rows in (1, 2, 7, 784):
        for count in (1, 2, 3, 16):
            blocks = parallel.row_blocks(rows, count)
            covered = [i for block in blocks for i in range(rows)[block]]
            assert covered == list(range(rows))
            assert len(blocks) == min(count, rows)


def test_blocks_run_on_several_threads_and_each_row_once(small_blocks: None) -> None:
    parallel.set_threads(3)
    seen: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def kernel(rows: slice) -> None:
        with lock:
            seen.append((rows.start, rows.stop, threading.get_ident()))

    parallel.for_row_blocks(kernel, 10, 4)
    assert sorted((start, stop) for start, stop, _ in seen) == [(0, 4), (4, 7), (7, 10)]
    assert len({thread for _, _, thread in seen}) > 1
    seen.clear()
    parallel.set_threads(1)
    parallel.for_row_blocks(kernel, 10, 4)
    assert [(start, stop) for start, stop, _ in seen] == [(0, 10)]


def test_an_error_in_a_block_reaches_the_caller(small_blocks: None) -> None:
    parallel.set_threads(2)

    def kernel(rows: slice) -> None:
        if rows.start > 0:
            raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        parallel.for_row_blocks(kernel, 10, 4)


def best_steps(threads: int, steps: int = 4) -> dict[str, np.ndarray]:
    """``steps`` training steps of best.yaml's recipe (Nesterov, L2, dropout) on a small network."""
    parallel.set_threads(threads)
    config = load_config(None, {"model.hidden": 40, "train.batch_size": 32, "train.l2": 1e-3,
                                "train.dropout": 0.1, "train.input_dropout": 0.2, "optimizer.name": "nesterov",
                                "optimizer.momentum": 0.9, "optimizer.lr": 0.2})
    rng = np.random.default_rng(5)
    X = rng.standard_normal((32, 784)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    params = init_params(40, np.random.default_rng(1), dtype=np.float32)
    state = TrainState.for_params(config, params, steps_per_epoch=steps)
    workspace = Workspace()
    dropout = Dropout(config, workspace)
    for step in range(steps):
        train_step(state, X, y, config.train.l2, workspace, dropout.masks(1, step, X))
    return {**state.params.as_dict(), **state.optimizer.state_dict()}


@pytest.mark.parametrize("kernels", ["numpy", ""])
def test_one_thread_or_two_give_the_same_parameters(kernels: str, small_blocks: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fused.KERNELS_VARIABLE, kernels)
    one, two = best_steps(1), best_steps(2)
    for key in one:
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)


def test_training_steps_with_the_compiled_kernels_equal_the_numpy_forms_bit_for_bit(
        small_blocks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every compiled pass of best.yaml's step at once (thinning, the hidden layer, the loss
    unit's output, dZ1, Nesterov with its L2 term), through train_step: the same bits."""
    need_numba()
    results = []
    for kernels in ("numpy", ""):
        monkeypatch.setenv(fused.KERNELS_VARIABLE, kernels)
        results.append(best_steps(1))
    assert fused.kernel_name() == "numba"
    for key in results[0]:
        np.testing.assert_array_equal(results[1][key], results[0][key], err_msg=key)


def test_the_thread_count_follows_the_blas_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in parallel.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert parallel.default_threads() == 3
    monkeypatch.setenv("MLP_THREADS", "5")
    assert parallel.default_threads() == 5


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-15), (np.float32, 1e-7)])
def test_the_two_sigmoid_forms_agree_to_rounding(dtype: type, tolerance: float) -> None:
    z = np.concatenate([np.linspace(-120, 120, 2001), [0.0, -1e-30, 1e-30]]).astype(dtype).reshape(1, -1)
    exact = 1 / (1 + np.exp(-z.astype(np.float64)))
    results = {}
    with np.errstate(over="ignore"):
        for form in SIGMOID_FORMS:
            results[form] = inplace_sigmoid(z.copy(), form)
            assert results[form].dtype == dtype
            np.testing.assert_allclose(results[form], exact, rtol=8 * tolerance, atol=tolerance, err_msg=form)
    assert np.all((results["exp"] >= 0) & (results["exp"] <= 1))


@pytest.mark.parametrize("form", SIGMOID_FORMS)
def test_the_tuned_step_equals_the_reference_in_either_form(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli.nn import backprop as module

    monkeypatch.setitem(module._chosen, "sigmoid", form)
    assert sigmoid_form() == form
    params = init_params(20, np.random.default_rng(2), dtype=np.float64)
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((16, 784)), rng.integers(0, 10, 16)
    loss, grads = loss_and_gradients(params, X, y, 1e-3, Workspace())
    ref_loss, expected = backprop(params, X, y, 1e-3)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(getattr(grads, name), getattr(expected, name), rtol=1e-10, atol=1e-15)


def test_the_sigmoid_form_is_fixed_per_process() -> None:
    assert sigmoid_form() in SIGMOID_FORMS
    assert all(sigmoid_form() == sigmoid_form() for _ in range(3))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool(small_blocks: None) -> None:
    import multiprocessing

    parallel.set_threads(2)
    parallel.for_row_blocks(lambda rows: None, 10, 4)  # the parent's pool exists now
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        rows = pool.apply_async(_blocks_in_child).get(timeout=60)
    assert rows == [(0, 5), (5, 10)]


def _blocks_in_child() -> list[tuple[int, int]]:
    parallel.MIN_BLOCK_ENTRIES = 8
    seen: list[tuple[int, int]] = []
    parallel.for_row_blocks(lambda rows: seen.append((rows.start, rows.stop)), 10, 4)
    return sorted(seen)


def test_blocks_on_pool_threads_keep_the_callers_error_handling(small_blocks: None) -> None:
    """train_step ignores overflow (DivergenceGuard judges the loss): a block on another thread
    must too, or the warning (an error under this suite's filter) escapes from the pool."""
    parallel.set_threads(2)
    a = np.full((10, 4), 1e30, dtype=np.float32)

    def kernel(rows: slice) -> None:
        block = a[rows]
        block *= np.float32(1e30)

    with np.errstate(over="ignore"):
        parallel.for_row_blocks(kernel, 10, 4)
    assert np.isinf(a).all()
