"""Seconds per epoch of the tool's training step, beside PyTorch and beside the GEMM floor.

The contenders train (or compute) on the same data, batch by batch, and are timed one epoch at
a time, interleaved (tool with each initialisation, floor, torch, torch with flush-to-zero,
PyTorch's floor, then again), so that a slow stretch of the machine hits all of them alike:

- ``tool``: ``mlp_cli.training.step.train_step`` itself (the gradients and the optimiser's update),
  as ``mlp_cli.training.loop.train`` calls it (batches taken in order as views, one Workspace, the
  loss checked for finiteness); plain SGD.
- ``floor``: the five matrix products of one step alone (X W1, A1 W2, A1^T dZ2, dZ2 W2^T,
  X^T dZ1) into preallocated outputs, same shapes and dtype: what numpy's BLAS needs at least.
- ``torch`` / ``torch_ftz``: the same network in PyTorch (nn.Linear, nn.Sigmoid, cross_entropy,
  torch.optim.SGD), with the same initial weights and as many threads as numpy's BLAS, with
  flush-denormal off and on, each in a process of its own (benchmarks/torch_worker.py says why);
  the comparison uses the faster of the two. ``torch_floor``: the five products in PyTorch.

Before each timed epoch the process sleeps a little: OpenBLAS's and OpenMP's worker threads
spin for a while after a call, and a contender must not start while another's threads still
hold a core. An epoch during which other processes used the machine is measured again.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import machine
from benchmarks.machine import LoadMeter, wait_for_quiet
from benchmarks.process import REPO_ROOT
from mlp_cli.config_file import load_config
from mlp_cli.nn.backprop import loss_and_gradients
from mlp_cli.nn.network import Params, init_params
from mlp_cli.nn.workspace import Workspace
from mlp_cli.training.state import TrainState
from mlp_cli.training.step import train_step

# The learning rate each initialisation is trained with: CS229's, and the tool's default.
LEARNING_RATES = {"normal": 5.0, "xavier": 0.5}


@dataclass(frozen=True)
class Case:
    hidden: int
    batch: int
    dtype: str
    init: str  # "normal" (CS229: N(0, 1)) or "xavier"

    @property
    def name(self) -> str:
        return f"h{self.hidden} B{self.batch} {self.dtype} {'cs229' if self.init == 'normal' else self.init}"


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)
    disturbed_retries: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median if self.samples else None, "samples": [round(s, 5) for s in self.samples],
                "disturbed_retries": self.disturbed_retries}


def _paired(a: Timing, b: Timing) -> float:
    """Median over the repeats of a's epoch / b's epoch in the same repeat: a second estimate of
    the ratio, less sensitive than the ratio of medians to the machine's speed drifting."""
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))


def standardized(images: np.ndarray, dtype: str) -> np.ndarray:
    """uint8 (n, 28, 28) -> (n, 784) with one scalar mean and std, as CS229 normalises."""
    X = images.reshape(len(images), -1).astype(dtype)
    mean, std = float(X.mean(dtype=np.float64)), float(X.std(dtype=np.float64))
    X -= X.dtype.type(mean)
    X /= X.dtype.type(std)
    return X


# --------------------------------------------------------------------------------------------
# The contenders: each is built once per case and returns a function that runs one epoch.


def tool_epoch(case: Case, X: np.ndarray, y: np.ndarray, params: Params) -> Callable[[], None]:
    """One epoch of the tool's own ``train_step``, as ``mlp_cli.training.loop.train`` calls it
    (in-order batches, one Workspace)."""
    n, B = len(y), case.batch
    steps = math.ceil(n / B)
    config = load_config(None, {"model.hidden": case.hidden, "model.dtype": case.dtype, "train.batch_size": B,
                                "optimizer.name": "sgd", "optimizer.lr": LEARNING_RATES[case.init]})
    state = TrainState.for_params(config, params.copy(), steps)
    workspace = Workspace()

    def epoch() -> None:
        for step in range(steps):
            lo, hi = step * B, min(n, (step + 1) * B)
            loss = train_step(state, X[lo:hi], y[lo:hi], 0.0, workspace)
            if not math.isfinite(loss):
                raise RuntimeError(f"{case.name}: the tool's loss became {loss}")

    epoch.params = state.params  # type: ignore[attr-defined]  # read by subnormal_census
    return epoch


def floor_epoch(case: Case, X: np.ndarray, params: Params) -> Callable[[], None]:
    """The five matrix products of each step alone, into preallocated outputs."""
    B, h, d, k = case.batch, case.hidden, X.shape[1], params.W2.shape[1]
    dt = np.dtype(case.dtype)
    W1, W2 = params.W1.copy(), params.W2.copy()
    rng = np.random.default_rng(0)
    A1, dA1 = np.empty((B, h), dt), np.empty((B, h), dt)
    Z2 = np.empty((B, k), dt)
    dZ2 = (rng.standard_normal((B, k)) * 1e-3).astype(dt)  # plain normal numbers
    dW1, dW2 = np.empty((d, h), dt), np.empty((h, k), dt)
    n = len(X)

    def epoch() -> None:
        for lo in range(0, n, B):
            Xb = X[lo : lo + B]
            m = len(Xb)
            np.matmul(Xb, W1, out=A1[:m])  # X W1
            np.matmul(A1[:m], W2, out=Z2[:m])  # A1 W2
            np.matmul(A1[:m].T, dZ2[:m], out=dW2)  # A1^T dZ2
            np.matmul(dZ2[:m], W2.T, out=dA1[:m])  # dZ2 W2^T
            np.matmul(Xb.T, dA1[:m], out=dW1)  # X^T dZ1

    return epoch


def torch_model_epoch(case: Case, X: np.ndarray, y: np.ndarray, params: Params) -> Callable[[], None]:
    """The same network in PyTorch, trained the straightforward way; runs inside a
    benchmarks/torch_worker.py process, whose flush-to-zero mode it inherits."""
    import torch
    import torch.nn.functional as F

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n, B = len(y), case.batch
    from benchmarks.torch_network import torch_network

    model = torch_network(params)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATES[case.init])

    def epoch() -> None:
        for lo in range(0, n, B):
            loss = F.cross_entropy(model(Xt[lo : lo + B]), yt[lo : lo + B])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not math.isfinite(loss.item()):  # the tool checks every step's loss too
                raise RuntimeError(f"{case.name}: torch's loss became {loss.item()}")

    return epoch


def torch_floor_epoch(case: Case, X: np.ndarray, params: Params) -> Callable[[], None]:
    """The same five products in PyTorch (its BLAS, MKL): tells a gap that numpy's BLAS sets."""
    import torch

    B, h, k = case.batch, case.hidden, params.W2.shape[1]
    Xt = torch.from_numpy(X)
    W1, W2 = torch.from_numpy(params.W1.copy()), torch.from_numpy(params.W2.copy())
    dt = W1.dtype
    A1, dA1, Z2 = torch.empty((B, h), dtype=dt), torch.empty((B, h), dtype=dt), torch.empty((B, k), dtype=dt)
    dZ2 = torch.randn((B, k), dtype=dt, generator=torch.Generator().manual_seed(0)) * 1e-3
    dW1, dW2 = torch.empty(W1.shape, dtype=dt), torch.empty(W2.shape, dtype=dt)
    n = len(X)

    def epoch() -> None:
        for lo in range(0, n - B + 1, B):
            Xb = Xt[lo : lo + B]
            torch.mm(Xb, W1, out=A1)
            torch.mm(A1, W2, out=Z2)
            torch.mm(A1.t(), dZ2, out=dW2)
            torch.mm(dZ2, W2.t(), out=dA1)
            torch.mm(Xb.t(), dA1, out=dW1)

    return epoch


class TorchWorker:
    """A benchmarks/torch_worker.py process holding the PyTorch models of one group."""

    def __init__(self, data_file: Path, cases: list[Case], threads: int, flush: bool) -> None:
        first = cases[0]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.torch_worker"], cwd=REPO_ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )
        self._send({"setup": {"data": str(data_file), "dtype": first.dtype, "hidden": first.hidden,
                              "batch": first.batch, "inits": [c.init for c in cases], "threads": threads,
                              "flush": flush}})
        if not self._receive().get("ready"):
            raise RuntimeError("the PyTorch worker did not start")

    def epoch(self, key: str) -> float:
        self._send({"epoch": key})
        return float(self._receive()["seconds"])

    def close(self) -> None:
        if self.process.poll() is None:
            self._send({"quit": True})
            self.process.wait(timeout=60)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the PyTorch worker exited ({self.process.wait()})")
        return json.loads(line)


def save_epoch_data(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    """The inputs the PyTorch workers load (the very arrays the tool trains on)."""
    with path.open("wb") as f:
        np.savez(f, X=X, y=y)
    return path


# --------------------------------------------------------------------------------------------
# Measuring


def subnormal_census(case: Case, epoch: Callable[[], None], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """After the timed epochs, one more epoch of the tool's step, reading its Workspace after
    every step: the fraction of subnormal entries in what enters the matrix products, and the
    fraction of A1 that the sigmoid saturated to exactly 0 or 1."""
    params: Params = epoch.params  # type: ignore[attr-defined]  # set by tool_epoch
    ws = Workspace()
    tiny = np.finfo(np.dtype(case.dtype)).tiny
    # buffer -> what it holds after a step (see loss_and_gradients and its StepBuffers)
    names = {"A1": "A1", "A1W2": "A1 W2", "Z2": "dZ2", "dZ1": "dZ1", "dW1": "dW1", "dW2": "dW2"}
    counts = dict.fromkeys(names.values(), 0)
    sizes = dict.fromkeys(names.values(), 0)
    saturated = 0
    B, n = case.batch, len(y)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for lo in range(0, n, B):
            loss_and_gradients(params, X[lo : lo + B], y[lo : lo + B], 0.0, ws)
            held = ws.arrays()
            for buffer, label in names.items():
                a = held[f"StepBuffers.{buffer}"]
                counts[label] += int(np.count_nonzero((a != 0) & (np.abs(a) < tiny)))
                sizes[label] += a.size
            A1 = held["StepBuffers.A1"]
            saturated += int(np.count_nonzero((A1 == 0) | (A1 == 1)))
    for name in ("W1", "W2"):
        a = params[name]
        counts[name] = int(np.count_nonzero((a != 0) & (np.abs(a) < tiny)))
        sizes[name] = a.size
    fractions = {label: counts[label] / sizes[label] for label in counts}
    fractions["A1 exactly 0 or 1"] = saturated / sizes["A1"]
    return fractions


def measure_group(
    cases: list[Case],
    X: np.ndarray,
    y: np.ndarray,
    *,
    repeats: int,
    warmup: int,
    threads: int,
    torch_data: Path | None,
    settle: float,
    log: Callable[[str], None],
    census: bool = True,
) -> list[dict[str, Any]]:
    """Interleaved epochs of every contender of ``cases`` (one shape and dtype, one case per
    initialisation, so that the initialisations are compared side by side too); one result
    per case, with its medians and ratios. The GEMM floors do not depend on the initialisation
    and are measured once for the group. ``torch_data``: the .npz of X and y for the PyTorch
    workers (None: no PyTorch)."""
    first = cases[0]
    assert all((c.hidden, c.batch, c.dtype) == (first.hidden, first.batch, first.dtype) for c in cases)
    X = X.astype(first.dtype, copy=False)

    def timed(run: Callable[[], None]) -> Callable[[], float]:
        def measure() -> float:
            t0 = time.perf_counter()
            run()
            return time.perf_counter() - t0

        return measure

    contenders: dict[tuple[str, str], Callable[[], float]] = {}
    tool_runs = {}
    for case in cases:
        params = init_params(case.hidden, np.random.default_rng(0), case.init, case.dtype)
        tool_runs[case.init] = tool_epoch(case, X, y, params)
        contenders[case.init, "tool"] = timed(tool_runs[case.init])
        if case is first:
            contenders["", "floor"] = timed(floor_epoch(case, X, params))
    workers: list[TorchWorker] = []
    try:
        if torch_data is not None:
            for flush, name in ((False, "torch"), (True, "torch_ftz")):
                worker = TorchWorker(torch_data, cases, threads, flush)
                workers.append(worker)
                for case in cases:
                    contenders[case.init, name] = functools.partial(worker.epoch, case.init)
            contenders["", "torch_floor"] = functools.partial(workers[0].epoch, "floor")
        timings = {key: Timing() for key in contenders}
        for _ in range(warmup):
            for run in contenders.values():
                run()
        keys = list(contenders)
        for repeat in range(repeats):
            turn = repeat % len(keys)  # each repeat starts with the next contender: no fixed order
            for key in keys[turn:] + keys[:turn]:
                run = contenders[key]
                for attempt in range(4):
                    time.sleep(settle)
                    with LoadMeter(helpers=tuple(w.process.pid for w in workers)) as meter:
                        seconds = run()
                    if not meter.load.disturbed or attempt == 3 or machine.NEVER_WAIT:
                        break
                    timings[key].disturbed_retries += 1
                    wait_for_quiet(max_wait=120.0, log=log)
                timings[key].samples.append(seconds)
    finally:
        for worker in workers:
            worker.close()

    results = []
    for case in cases:
        own = {name: t for (init, name), t in timings.items() if init in ("", case.init)}
        med = {name: t.median for name, t in own.items()}
        result: dict[str, Any] = {
            "case": case.name,
            "hidden": case.hidden,
            "batch": case.batch,
            "dtype": case.dtype,
            "init": case.init,
            "lr": LEARNING_RATES[case.init],
            "examples": len(y),
            "steps": math.ceil(len(y) / case.batch),
            "seconds": {name: t.to_dict() for name, t in own.items()},
            "tool_vs_floor": med["tool"] / med["floor"],
        }
        result["paired"] = {"tool_vs_floor": _paired(own["tool"], own["floor"])}
        if "torch" in med:
            best = "torch_ftz" if med["torch_ftz"] < med["torch"] else "torch"
            result["torch_best"] = best
            result["tool_vs_torch"] = med["tool"] / med[best]
            result["torch_floor_vs_floor"] = med["torch_floor"] / med["floor"]
            result["paired"]["tool_vs_torch"] = _paired(own["tool"], own[best])
        if case.init == "normal" and ("xavier", "tool") in timings:  # side by side, same run
            result["tool_vs_xavier"] = med["tool"] / timings["xavier", "tool"].median
            result["paired"]["tool_vs_xavier"] = _paired(own["tool"], timings["xavier", "tool"])
        if census:
            result["subnormal_fraction"] = subnormal_census(case, tool_runs[case.init], X, y)
        results.append(result)
    return results
