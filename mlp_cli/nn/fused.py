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

import os
from collections.abc import Callable
from dataclasses import dataclass

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
        import numba
    except ImportError:
        return None
    jit = numba.njit(nogil=True, cache=True, fastmath=False, error_model="numpy")

    def sgd(p, g, lr):  # type: ignore[no-untyped-def]
        for i in range(p.size):
            p[i] = p[i] - g[i] * lr

    def momentum(p, g, v, mu, lr):  # type: ignore[no-untyped-def]
        for i in range(p.size):
            vi = v[i] * mu
            vi = vi + g[i]
            v[i] = vi
            p[i] = p[i] - vi * lr

    def nesterov(p, g, v, mu, lr):  # type: ignore[no-untyped-def]
        for i in range(p.size):
            gi = g[i]
            vi = v[i] * mu
            vi = vi + gi
            v[i] = vi
            s = vi * mu
            s = s + gi
            s = s * lr
            p[i] = p[i] - s

    def add_scaled(a, b, c):  # type: ignore[no-untyped-def]
        for i in range(a.size):
            a[i] = a[i] + b[i] * c

    def adam(p, g, m, v, beta1, rest1, beta2, rest2, eps_hat, alpha_t):  # type: ignore[no-untyped-def]
        for i in range(p.size):
            gi = g[i]
            mi = m[i] * beta1
            mi = mi + gi * rest1
            m[i] = mi
            s = gi * gi
            s = s * rest2
            vi = v[i] * beta2
            vi = vi + s
            v[i] = vi
            s = np.sqrt(vi)
            s = s + eps_hat
            s = mi / s
            s = s * alpha_t
            p[i] = p[i] - s

    def thin(out, a, keep, scale, one, zero):  # type: ignore[no-untyped-def]
        for i in range(out.size):
            x = a[i] * (one if keep[i] else zero)  # numpy's a * keep: the bool as 1.0 or 0.0
            out[i] = x * scale

    def sigmoid_backward(d, a, one):  # type: ignore[no-untyped-def]
        for i in range(d.size):
            s = one - a[i]
            s = s * a[i]
            d[i] = d[i] * s

    def dropout_sigmoid_backward(d, keep, a, scale, one, zero):  # type: ignore[no-untyped-def]
        for i in range(d.size):
            x = d[i] * (one if keep[i] else zero)  # numpy's d * keep: the bool as 1.0 or 0.0
            x = x * scale
            s = one - a[i]
            s = s * a[i]
            d[i] = x * s

    try:
        return Kernels(sgd=jit(sgd), momentum=jit(momentum), nesterov=jit(nesterov), adam=jit(adam),
                       add_scaled=jit(add_scaled), thin=jit(thin),
                       sigmoid_backward=jit(sigmoid_backward), dropout_sigmoid_backward=jit(dropout_sigmoid_backward))
    except Exception:  # an unusable numba install: the numpy forms run, as without it
        return None
