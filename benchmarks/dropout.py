"""What dropout costs per training step: ``train_step`` with and without masks, interleaved.

For each batch size, the same float32 784-300-10 network takes steps on MNIST-shaped random
inputs, three ways, one block of steps each in turn (so a slow stretch of the machine hits all
alike): no dropout; hidden dropout; hidden and input dropout. The masked steps include drawing
the masks (``training.step.Dropout.masks``: a generator seeded by the batch's position, then the
uniform draws), as the training loop does. Prints the median milliseconds per step of each and
the ratio to no dropout, with the machine.

    python -m benchmarks.dropout                 # about a minute
    python -m benchmarks.dropout --steps 20 --rounds 2   # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks import machine
from mlp_cli.config_file import load_config
from mlp_cli.nn.network import init_params
from mlp_cli.nn.workspace import Workspace
from mlp_cli.training.state import TrainState
from mlp_cli.training.step import Dropout, train_step

WAYS = {"none": (0.0, 0.0), "hidden 0.5": (0.5, 0.0), "hidden 0.5 + input 0.2": (0.5, 0.2)}


def time_block(batch: int, ways: dict[str, tuple[float, float]], steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each way, over ``rounds`` interleaved blocks of ``steps`` steps."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    setups = {}
    for name, (hidden, inputs) in ways.items():
        config = load_config(None, {"train.batch_size": batch, "train.dropout": hidden, "train.input_dropout": inputs,
                                    "optimizer.lr": 0.01, "model.hidden": 300})
        state = TrainState.for_params(config, init_params(300, np.random.default_rng(1)), steps_per_epoch=steps)
        workspace = Workspace()
        setups[name] = (state, workspace, Dropout(config, workspace))
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, (state, workspace, dropout) in setups.items():
            train_step(state, X, y, 0.0, workspace, dropout.masks(1, 0, X))  # warm: buffers, caches
            start = time.perf_counter()
            for step in range(steps):
                train_step(state, X, y, 0.0, workspace, dropout.masks(1, step, X))
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[50, 1000])
    parser.add_argument("--steps", type=int, default=200, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved blocks per way")
    args = parser.parse_args()
    info = machine.describe()
    print(f"{info['cpu']}, {info['cores']} cores, numpy {info['numpy']}, BLAS {info['blas']}")
    for batch in args.batches:
        steps = max(1, args.steps * 50 // batch) if batch > 50 else args.steps
        medians = time_block(batch, WAYS, steps, args.rounds)
        base = medians["none"]
        cells = ", ".join(f"{name} {1e3 * t:.3f} ms ({t / base:.2f})" for name, t in medians.items())
        print(f"batch {batch} ({steps} steps x {args.rounds} rounds): {cells}")


if __name__ == "__main__":
    main()
