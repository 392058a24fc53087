"""A PyTorch contender in a process of its own, driven by benchmarks/epoch.py over a pipe.

    python -m benchmarks.torch_worker   (JSON lines on stdin, answers on stdout)

Why a separate process: ``torch.set_flush_denormal`` sets the flush-to-zero and
denormals-are-zero bits of the *calling thread* only. Worker threads started afterwards inherit
them, threads that already exist do not; so a flush-to-zero contender must set them before
PyTorch starts its thread pool, that is, in a fresh process (as benchmarks/torch_cs229.py does).
It also keeps PyTorch's OpenMP threads and numpy's OpenBLAS threads out of each other's way.

Messages (one JSON object per line):

- ``{"setup": {...}}``: data file (.npz with X and y), dtype, hidden, batch, the initialisations,
  threads, flush (bool); the answer ``{"ready": true}``.
- ``{"epoch": "<init>"}`` / ``{"epoch": "floor"}``: one timed epoch of that model (or of the five
  products alone); the answer ``{"seconds": s}``, timed here, in this process.
- ``{"quit": true}``.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    first = json.loads(sys.stdin.readline())["setup"]
    import torch

    torch.set_flush_denormal(bool(first["flush"]))  # before any thread exists: all of them inherit it
    torch.set_num_threads(int(first["threads"]))

    import numpy as np

    from benchmarks.epoch import Case, torch_floor_epoch, torch_model_epoch
    from mlp_cli.nn.network import init_params

    with np.load(first["data"], allow_pickle=False) as data:
        X, y = np.array(data["X"]), np.array(data["y"])
    runs = {}
    for init in first["inits"]:
        case = Case(int(first["hidden"]), int(first["batch"]), first["dtype"], init)
        params = init_params(case.hidden, np.random.default_rng(0), init, case.dtype)
        runs[init] = torch_model_epoch(case, X, y, params)
        if "floor" not in runs:
            runs["floor"] = torch_floor_epoch(case, X, params)
    _answer({"ready": True, "flush": bool(first["flush"])})
    for line in sys.stdin:
        message = json.loads(line)
        if "quit" in message:
            break
        run = runs[message["epoch"]]
        t0 = time.perf_counter()
        run()
        _answer({"seconds": time.perf_counter() - t0})


def _answer(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
