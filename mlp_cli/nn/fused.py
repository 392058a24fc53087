"""Compiled one-pass kernels for the optimiser updates: numba, when the ``fast`` extra is installed.

numpy runs an update such as Nesterov's as six passes over the weight matrix and its velocity
(``v *= mu``, ``v += g``, ``s = mu v``, ``s += g``, ``s *= eta``, ``p -= s``), each reading and
writing whole arrays. A compiled loop does the six operations per entry in registers: one pass.

Each kernel performs, entry by entry, exactly the float operations of the numpy form beside it
in ``nn.optimizers`` and ``nn.backprop`` (the reference), in the same order and the same dtype:
the scalars are cast to the arrays' dtype first, as numpy does with a Python float (NEP 50), and
numba's default keeps LLVM from contracting a multiply and an add into one fused multiply-add
or from reassociating (``fastmath`` off). So the results are bit-identical to numpy's, which a
float32 and a float64 test hold.

The same holds for the backward pass's dZ1 = dA1 * M1 * A1 (1 - A1): dropout's mask and scale
and the sigmoid's derivative, five numpy passes over (B, h), in one.

numba is optional (``pip install 'mlp[fast]'``): it adds about 210 MB (llvmlite 173 MB) and
0.15 s of import, and compiles each kernel at its first call (about 0.6 s each, then cached on
disk). ``kernels()`` imports it lazily, on the first optimiser step; without it, or with
``MLP_KERNELS=numpy``, it returns None and the numpy forms run.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

Kernel = Callable[..., None]

KERNELS_VARIABLE = "MLP_KERNELS"  # "numpy" forces the reference forms


@dataclass(frozen=True)
class Kernels:
    """The compiled kernels; arguments are 1-D contiguous arrays of one dtype, scalars of it."""

    sgd: Kernel  # (p, g, lr): p <- p - g lr
    momentum: Kernel  # (p, g, v, mu, lr): v <- v mu + g; p <- p - v lr
    nesterov: Kernel  # (p, g, v, mu, lr): v <- v mu + g; p <- p - (v mu + g) lr
    add_scaled: Kernel  # (a, b, c): a <- a + b c
    adam: Kernel  # (p, g, m, v, beta1, 1 - beta1, beta2, 1 - beta2, eps c, alpha_t): Adam's moments and step
    thin: Kernel  # (out, a, keep, scale, one, zero): out <- (a keep) scale, dropout's A * M
    sigmoid_backward: Kernel  # (d, a, one): d <- d (1 - a) a
    dropout_sigmoid_backward: Kernel  # (d, keep, a, scale, one, zero): d <- ((d keep) scale) ((1 - a) a)


_state: dict[str, Kernels | None] = {}


def kernels() -> Kernels | None:
    """The compiled kernels, or None where numba is absent or ``MLP_KERNELS=numpy``."""
    if os.environ.get(KERNELS_VARIABLE, "").strip().lower() == "numpy":
        return None
    if "kernels" not in _state:
        _state["kernels"] = _build()
    return _state["kernels"]


def kernel_name() -> str:
    """Which form the optimiser updates run in this process: "numba" or "numpy"."""
    return "numpy" if kernels() is None else "numba"


def rows_cols(a: np.ndarray) -> tuple[int, int]:
    """An array as (rows, entries per row), for ``nn.parallel.for_row_blocks``."""
    rows = a.shape[0] if a.ndim else 1
    return rows, a.size // max(rows, 1)


def fits(*arrays: np.ndarray) -> bool:
    """Whether the kernels can take these arrays: C-contiguous, at least 1-D, one float dtype (a
    boolean mask may be among them)."""
    first = arrays[0]
    return all(a.ndim >= 1 and a.flags.c_contiguous and a.dtype in (first.dtype, np.bool_) for a in arrays)


def over_rows(kernel: Kernel, arrays: tuple[np.ndarray, ...], scalars: tuple[float, ...], rows: slice) -> None:
    """``kernel`` over a block of rows: flat views of the rows, the scalars cast to the arrays' dtype."""
    dtype = arrays[0].dtype.type
    kernel(*(a[rows].reshape(-1) for a in arrays), *(dtype(x) for x in scalars))


def _build() -> Kernels | None:
    try:
        compiled = importlib.import_module("mlp_cli.nn.compiled")  # imports numba
    except Exception:  # numba not installed (ImportError), or unusable: the numpy forms run
        return None
    names = [f.name for f in fields(Kernels)]
    return Kernels(**{name: getattr(compiled, name) for name in names})
