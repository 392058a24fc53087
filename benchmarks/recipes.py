"""The training steps of the recipes people run, beside PyTorch and beside their GEMM floor.

``best.yaml`` (Nesterov, L2, dropout on the inputs and hidden units, batch 50, 300 hidden units)
and ``best-30.yaml`` (Nesterov, L2, batch 50): one step of the tool is ``training.step.train_step``
with the batch's dropout masks, drawn as the loop draws them; PyTorch's is the same network
(``nn.Linear``, sigmoid, ``nn.Dropout``) with ``torch.optim.SGD(nesterov=True)``, the L2 term as
weight decay 2 lambda on the weights only (the tool's penalty is lambda |W|^2, biases free), the
same thread count; the floor is the five matrix products of a step at that batch size alone.
Contenders are interleaved block by block; the result is the median milliseconds per step (and the
median of the per-round tool/floor ratios, `paired`).

    python -m benchmarks.recipes                  # about a minute, prints a table and the JSON
    python -m benchmarks.run --parts recipes      # the same inside the suite (its JSON)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import machine
from benchmarks.process import REPO_ROOT
from mlp_cli.config import Config
from mlp_cli.config_file import load_config
from mlp_cli.nn import fused, parallel
from mlp_cli.nn.backprop import sigmoid_form
from mlp_cli.nn.network import init_params
from mlp_cli.nn.workspace import Workspace
from mlp_cli.training.state import TrainState
from mlp_cli.training.step import Dropout, train_step

RECIPES = ("best", "best-30")
Step = Callable[[int], None]


def recipe(name: str) -> Config:
    return load_config(REPO_ROOT / "configs" / f"{name}.yaml")


def batch(config: Config, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    B = config.train.batch_size
    return rng.standard_normal((B, 784)).astype(np.float32), rng.integers(0, 10, B)


def tool_step(config: Config) -> Step:
    """One ``train_step`` of the recipe, with the masks of batch ``i`` drawn as the loop does."""
    X, y = batch(config)
    params = init_params(config.model.hidden, np.random.default_rng(1), config.model.init)
    state = TrainState.for_params(config, params, steps_per_epoch=1000)
    workspace = Workspace()
    dropout = Dropout(config, workspace)
    lr_scale = 1e-3  # small steps on a fixed random batch: the weights stay near their start

    def step(i: int) -> None:
        train_step(state, X, y, config.train.l2, workspace, dropout.masks(1, i % 1000, X))

    state.schedule = _scaled(state.schedule, lr_scale)
    return step


def _scaled(schedule: Callable[[int], float], factor: float) -> Callable[[int], float]:
    return lambda step: factor * schedule(step)


def floor_step(config: Config) -> Step:
    """The five products of a step at the recipe's batch size, into preallocated outputs."""
    X, _ = batch(config)
    B, h, k = X.shape[0], config.model.hidden, 10
    rng = np.random.default_rng(2)
    W1, W2 = rng.standard_normal((784, h)).astype(np.float32), rng.standard_normal((h, k)).astype(np.float32)
    A1, dA1, Z2 = np.empty((B, h), np.float32), np.empty((B, h), np.float32), np.empty((B, k), np.float32)
    dZ2 = (rng.standard_normal((B, k)) * 1e-3).astype(np.float32)
    dW1, dW2 = np.empty((784, h), np.float32), np.empty((h, k), np.float32)

    def step(i: int) -> None:
        np.matmul(X, W1, out=A1)  # X W1
        np.matmul(A1, W2, out=Z2)  # A1 W2
        np.matmul(A1.T, dZ2, out=dW2)  # A1^T dZ2
        np.matmul(dZ2, W2.T, out=dA1)  # dZ2 W2^T
        np.matmul(X.T, dA1, out=dW1)  # X^T dZ1

    return step


def torch_step(config: Config, threads: int) -> Step:
    """The same recipe in PyTorch: the model, SGD(nesterov=True), nn.Dropout, cross-entropy."""
    import torch

    torch.set_num_threads(threads)
    X, y = (torch.from_numpy(a) for a in batch(config))
    train, h = config.train, config.model.hidden
    model = torch.nn.Sequential(
        torch.nn.Dropout(train.input_dropout), torch.nn.Linear(784, h), torch.nn.Sigmoid(),
        torch.nn.Dropout(train.dropout), torch.nn.Linear(h, 10),
    )
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = torch.optim.SGD(
        [{"params": weights, "weight_decay": 2 * train.l2}, {"params": biases, "weight_decay": 0.0}],
        lr=1e-3 * config.optimizer.lr, momentum=config.optimizer.momentum, nesterov=True,
    )
    model.train()

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(X), y).backward()
        optimizer.step()

    return step


def time_contenders(steps: dict[str, Step], per_block: int, rounds: int, settle: float = 0.0) -> dict[
        str, dict[str, Any]]:
    """Median ms per step of each contender over ``rounds`` interleaved blocks of ``per_block`` steps.

    Before each block the process sleeps ``settle`` seconds, as the epoch timings do: the worker
    threads of the contender before (OpenBLAS's, PyTorch's OpenMP) spin for a while after their
    last call, and a block started among them runs on a core they still hold."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    counter = 0
    for _ in range(rounds):
        for name, step in steps.items():
            time.sleep(settle)
            step(counter)  # warm
            start = time.perf_counter()
            for i in range(per_block):
                step(counter + i)
            samples[name].append(1e3 * (time.perf_counter() - start) / per_block)
        counter += per_block
    return {name: {"median_ms": statistics.median(v), "samples_ms": v} for name, v in samples.items()}


def measure(smoke: bool = False, with_torch: bool = True) -> dict[str, Any]:
    """Every recipe's step: the tool, its floor and PyTorch (if installed and asked for)."""
    threads = machine.numpy_blas_threads()
    per_block, rounds, settle = (5, 1, 0.0) if smoke else (200, 11, 0.3)
    results = []
    for name in RECIPES:
        config = recipe(name)
        steps = {"tool": tool_step(config), "floor": floor_step(config)}
        if with_torch:
            steps["torch"] = torch_step(config, threads)
        timed = time_contenders(steps, per_block, rounds, settle)
        entry: dict[str, Any] = {"recipe": name, "batch": config.train.batch_size, "hidden": config.model.hidden,
                                 "optimizer": config.optimizer.name, "l2": config.train.l2,
                                 "dropout": config.train.dropout, "input_dropout": config.train.input_dropout,
                                 "ms": timed}
        entry["tool_vs_floor"] = timed["tool"]["median_ms"] / timed["floor"]["median_ms"]
        entry["paired"] = {"tool_vs_floor": _paired(timed["tool"], timed["floor"])}
        if with_torch:
            entry["tool_vs_torch"] = timed["tool"]["median_ms"] / timed["torch"]["median_ms"]
        results.append(entry)
    return {"threads": {"blas": threads, "elementwise": parallel.threads()},
            "kernels": {"optimizer_updates": fused.kernel_name(), "sigmoid": sigmoid_form()},
            "torch": with_torch, "steps_per_block": per_block, "rounds": rounds, "recipes": results}


def _paired(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Median over the rounds of a's block / b's block in the same round: a second estimate of the
    ratio, less moved than the ratio of medians by the machine's speed drifting between rounds."""
    return statistics.median(x / y for x, y in zip(a["samples_ms"], b["samples_ms"], strict=True))


def format_lines(part: dict[str, Any]) -> list[str]:
    lines = [f"recipe steps (ms; kernels {part['kernels']}, threads {part['threads']}):"]
    for r in part["recipes"]:
        torch_ms = r["ms"].get("torch", {}).get("median_ms")
        torch_text = f", torch {torch_ms:.3f}, tool/torch {r['tool_vs_torch']:.2f}" if torch_ms else ""
        lines.append(f"  {r['recipe']:8s} B{r['batch']}: tool {r['ms']['tool']['median_ms']:.3f}, "
                     f"floor {r['ms']['floor']['median_ms']:.3f}, tool/floor {r['tool_vs_floor']:.2f} "
                     f"(paired {r['paired']['tool_vs_floor']:.2f}){torch_text}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
    part = measure(args.smoke, have_torch)
    print("\n".join(format_lines(part)))
    print(json.dumps({"machine": machine.describe(), **part}, indent=1))


if __name__ == "__main__":
    main()
