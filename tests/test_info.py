"""The network's account: parameter count, FLOPs by the derivation's formulas, memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mlp_cli.config import OptimizerConfig
from mlp_cli.config_file import load_config
from mlp_cli.nn import fused
from mlp_cli.nn.backprop import loss_and_gradients
from mlp_cli.nn.dropout import draw_masks
from mlp_cli.nn.evaluation import loss_and_accuracy
from mlp_cli.nn.network import init_params
from mlp_cli.nn.optimizers import make_optimizer
from mlp_cli.nn.workspace import Workspace
from mlp_cli.reports.info import info_for_config, network_info

STEP, EVALUATION = "training step: activations, dZ2, gradients", "evaluation: folded weights, a block of n rows"
DROPOUT = "dropout: masks, thinned X and A1"
PENALTY = "L2 term: g + 2 lambda W"


def test_parameters_and_shapes_follow_the_derivation() -> None:
    info = network_info(300)
    assert [(t.name, t.space, t.shape) for t in info.tensors] == [
        ("W1", "R^{784×h}", (784, 300)), ("b1", "R^h", (300,)),
        ("W2", "R^{h×10}", (300, 10)), ("b2", "R^10", (10,)),
    ]
    assert info.parameters == 784 * 300 + 300 + 300 * 10 + 10 == 238_510


@pytest.mark.parametrize("h", [1, 32, 300])
def test_flops_per_example(h: int) -> None:
    info = network_info(h)
    # matmuls 2dh + 2hk, biases h + k, sigmoid 4h, softmax 5k, loss 2
    assert info.forward_flops == 2 * 784 * h + 2 * h * 10 + h + 10 + 4 * h + 50 + 2
    # matmuls 2hk (dW2) + 2hk (dA1) + 2dh (dW1); P - Y and /B: k + 1; sums k + h; sigmoid' 3h
    assert info.backward_flops == 2 * h * 10 * 2 + 2 * 784 * h + 11 + 10 + h + 3 * h


def test_epoch_flops_count_training_updates_and_evaluation() -> None:
    info = network_info(10, batch_size=100, train_examples=1000, dev_examples=500, optimizer="momentum")
    assert info.steps_per_epoch == 10
    update = 4 * info.parameters  # momentum: 4 FLOPs per parameter and step
    expected = 1000 * (info.forward_flops + info.backward_flops) + 10 * update + 1500 * info.forward_flops
    assert info.epoch_flops == expected


def test_memory_depends_on_optimizer_dtype_and_data() -> None:
    sgd = {c.what: c.value for c in network_info(300, optimizer="sgd").memory}
    adam = {c.what: c.value for c in network_info(300, optimizer="adam").memory}
    params_bytes = 238_510 * 4
    assert sgd["parameters W1 b1 W2 b2"] == params_bytes and sgd["sgd state"] == 0
    assert adam["adam state"] == 2 * params_bytes + 8  # m, v and the int64 step count t
    assert sgd["dataset as float32 (train + dev)"] == 60_000 * 784 * 4
    assert sgd[STEP] > 1000 * 3 * 300 * 4 + params_bytes  # A1, dZ1, S and the gradients at least
    float64 = {c.what: c.value for c in network_info(300, dtype="float64").memory}
    assert float64["parameters W1 b1 W2 b2"] == 2 * sgd["parameters W1 b1 W2 b2"]
    assert float64["dataset as float64 (train + dev)"] == 2 * sgd["dataset as float32 (train + dev)"]
    assert "shuffled batch X" not in {c.what for c in network_info(300, shuffle=False).memory}


def test_l2_adds_per_step_work_only_when_on() -> None:
    assert [c.what for c in network_info(50).per_step] == ["sgd update"]
    with_l2 = network_info(50, l2=1e-4)
    assert with_l2.per_step[0].value == 2 * (784 * 50 + 50 * 10)


def test_from_config_uses_its_split_limit_and_settings() -> None:
    cs229 = info_for_config(load_config("configs/cs229-l2.yaml"))
    assert (cs229.train_examples, cs229.dev_examples, cs229.hidden, cs229.l2) == (50_000, 10_000, 300, 1e-4)
    limited = info_for_config(load_config(None, {"data.limit": 2000, "model.hidden": 64, "train.batch_size": 250}))
    assert (limited.train_examples, limited.hidden, limited.steps_per_epoch) == (2000, 64, 8)


def test_to_dict_is_json_and_consistent() -> None:
    data = json.loads(json.dumps(network_info(100).to_dict()))
    assert data["architecture"] == "784-100-10" and data["parameters"] == 784 * 100 + 100 + 1000 + 10
    assert data["flops"]["forward_per_example"] == sum(c["value"] for c in data["flops"]["forward"])
    assert data["memory"]["total_bytes"] == sum(c["value"] for c in data["memory"]["items"])


@pytest.mark.parametrize(("optimizer", "l2", "dtype", "dropout"), [
    ("sgd", 0.0, "float32", 0.0), ("adam", 1e-3, "float64", 0.0), ("momentum", 0.0, "float32", 0.3),
])
def test_memory_figures_are_the_bytes_a_step_an_evaluation_and_the_optimizer_allocate(
    optimizer: str, l2: float, dtype: str, dropout: float
) -> None:
    B, h, n_train, n_dev = 512, 40, 2_500, 2_000  # a (B, k) buffer: 20 kB; evaluation blocks of 2,000 rows
    info = network_info(h, batch_size=B, dtype=dtype, optimizer=optimizer, l2=l2, train_examples=n_train,
                        dev_examples=n_dev, dropout=dropout, input_dropout=dropout)
    memory = {c.what: c.value for c in info.memory}
    rng = np.random.default_rng(0)
    params = init_params(h, rng, "xavier", dtype)
    X, y = rng.standard_normal((n_train, 784)).astype(dtype), rng.integers(0, 10, n_train)
    # numpy's first-call caches (and numba's compiled kernels, where installed), not the run's memory
    warm_masks = draw_masks(np.random.default_rng(1), 5, 784, h, dropout, dropout, np.dtype(dtype), Workspace())
    _, warm_grads = loss_and_gradients(params, X[:5], y[:5], l2, Workspace(), warm_masks if dropout else None)
    warm_params = {name: array.copy() for name, array in params.as_dict().items()}
    make_optimizer(OptimizerConfig(name=optimizer), warm_params).step(warm_params, warm_grads.as_dict(), 0.1)
    loss_and_accuracy(params, X[:5], y[:5])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        workspace = Workspace()
        optim = make_optimizer(OptimizerConfig(name=optimizer), params.as_dict())
        masks = draw_masks(rng, B, 784, h, dropout, dropout, np.dtype(dtype), workspace) if dropout else None
        _, grads = loss_and_gradients(params, X[:B], y[:B], 0.0, workspace, masks)  # as train_step calls them:
        optim.step(params.as_dict(), grads.as_dict(), 0.1, penalty=2 * l2)  # the L2 term is the optimiser's
        loss_and_accuracy(params, X, y, workspace=workspace)
        loss_and_accuracy(params, X[:n_dev], y[:n_dev], workspace=workspace)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert memory[STEP] + memory[EVALUATION] + memory.get(DROPOUT, 0) == workspace.nbytes
    assert (DROPOUT in memory) == (dropout > 0)
    optimizer_bytes = sum(a.nbytes for a in optim.arrays().values())
    assert memory[f"{optimizer} state"] + memory["optimiser scratch"] + memory.get(PENALTY, 0) == optimizer_bytes
    assert (PENALTY in memory) == (l2 > 0 and fused.kernel_name() == "numpy")
    # and nothing else stays allocated but small Python objects (array headers, dicts: about 10 kB)
    assert 0 <= held - workspace.nbytes - optimizer_bytes < 16 * 1024, held - workspace.nbytes - optimizer_bytes


def test_info_for_a_checkpoint_shows_the_run(mnist_data_dir: Path, tmp_path: Path) -> None:
    from helpers import mlp as invoke

    from mlp_cli.training.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    trained = invoke("train", "--data-dir", mnist_data_dir, "--out", run_dir, "--hidden", "32", "--batch", "100",
                     "--epochs", "5", "--set", "data.limit=1000", "--set", "data.dev_size=500", "--quiet")
    assert trained.exit_code == 0, trained.output
    ckpt = load_checkpoint(run_dir / "best.npz")
    facts = json.loads(invoke("info", run_dir / "best.npz", "--json").stdout)["run"]
    assert facts["epoch"].startswith(f"{ckpt.epoch} of 5 ")
    assert facts["dev accuracy"] == f"{100 * ckpt.meta['accuracy']:.2f}%"
    assert facts["saved"] == ckpt.meta["saved_at"].replace("T", " ")
    assert "batch 100" in facts["training"] and "784-32-10" in facts["model"]
    deep = tmp_path / ("a-run-directory-with-a-long-name-" * 3) / "best.npz"  # longer than a terminal line
    deep.parent.mkdir()
    deep.write_bytes((run_dir / "best.npz").read_bytes())
    text = invoke("info", deep).stdout
    assert f"{deep} (epoch {ckpt.epoch})" in text.splitlines()  # the header, whole on its line
    assert "dev accuracy" in text and facts["saved"] in text


def test_dropout_adds_its_products_and_buffers() -> None:
    plain, thinned = network_info(300), network_info(300, dropout=0.5, input_dropout=0.2)
    assert [c.what for c in thinned.forward][:1] == ["X~ = X * M0"]
    assert "A1~ = A1 * M1" in [c.what for c in thinned.forward] and "dA1 *= M1" in [c.what for c in thinned.backward]
    extra = {c.what: c.value for c in thinned.memory}[DROPOUT]
    assert thinned.memory_bytes - plain.memory_bytes == extra == 1000 * (784 + 300) * (1 + 4)  # keep, thinned
    hidden_only = network_info(300, dropout=0.5)
    assert "X~ = X * M0" not in [c.what for c in hidden_only.forward]


def test_info_names_the_dropout_rates(tmp_path: Path) -> None:
    from helpers import mlp as invoke

    config = tmp_path / "c.yaml"
    config.write_text("train:\n  dropout: 0.25\n  input_dropout: 0.1\n")
    shown = invoke("info", "--config", config)
    assert shown.exit_code == 0, shown.output
    words = " ".join(shown.stdout.split())  # the header wraps at the terminal's width
    assert "dropout 0.25 (pixels 0.1)" in words and "X~ = X * M0" in words
    data = json.loads(invoke("info", "--config", config, "--json").stdout)
    assert (data["dropout"], data["input_dropout"]) == (0.25, 0.1)
    assert "dropout" not in " ".join(invoke("info").stdout.split())


def test_info_of_a_checkpoint_too_large_for_memory_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """info checks the weights (CRC, finiteness), so it reads them: the same check as every reader."""
    from helpers import mlp as invoke
    from hostile_inputs import good_checkpoint

    from mlp_cli import memory

    checkpoint = good_checkpoint(tmp_path / "run" / "last.npz", hidden=300)
    assert invoke("info", checkpoint).exit_code == 0
    monkeypatch.setattr(memory, "available_memory", lambda: 4 << 20)

    result = invoke("info", checkpoint)

    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "reading its 784-300-10 float32 network needs 9 MiB of memory but 4 MiB is available" in result.stderr
