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
and the sigmoid's derivative, five numpy passes over (B, h), in one; and for the training pass's
A1 = 0.5 (1 + tanh((X W1 + b1) / 2)), five passes in three (numpy's tanh in the middle); and for
the loss unit's J and dZ2 = (P - Y) / B with its subnormal entries flushed, some fifteen numpy
calls over the small (B, k) scores in two loops around numpy's exp and log (``backprop.output_delta``);
and for dropout's masks, drawn by numpy's SeedSequence and PCG64 ported bit for bit
(``nn.compiled_random``, tested against numpy's generator itself).

The L2 term rides in the optimiser's loop: ``g + c p`` per entry before the update, so penalty,
momentum and step are one pass over the weight matrix (numpy needs two more: ``c p``, then the
sum).

The kernels run on the calling thread. Splitting them over the cores the products use was
measured and left out: a Python thread pool costs some 50 us a call on a 2-vCPU machine (the
GIL handed back and forth between short numpy calls), and numba's OpenMP threads, which spin
between calls, fight OpenBLAS's own spinning threads for the cores (a batch-50 step went from
0.4 to 8 ms); with the spinning off they gained nothing.

numba is optional (``pip install 'mlp[fast]'``): it adds about 210 MB (llvmlite 173 MB) and
0.15 s of import, and compiles each kernel at its first call (about 0.6 s each, then cached on
disk). ``kernels()`` imports it lazily, on the first optimiser step; without it, or with
``MLP_KERNELS=numpy``, it returns None and the numpy forms run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

Kernel = Callable[..., None]
Check = Callable[..., int]  # a kernel that returns -1, or the first index it refused

KERNELS_VARIABLE = "MLP_KERNELS"  # "numpy" forces the reference forms


@dataclass(frozen=True)
class Kernels:
    """The compiled kernels; arguments are 1-D contiguous arrays of one dtype, scalars of it.

    ``decay`` (a bool) adds the L2 term first: g <- g + p c."""

    sgd: Kernel  # (p, g, lr, c, decay): p <- p - g lr
    momentum: Kernel  # (p, g, v, mu, lr, c, decay, nesterov): v <- v mu + g; p <- p - v lr, or (v mu + g) lr
    add_scaled: Kernel  # (a, b, c): a <- a + b c
    adam: Kernel  # (p, g, m, v, beta1, 1 - beta1, beta2, 1 - beta2, eps c, alpha_t, c, decay): Adam's moments and step
    thin: Kernel  # (out, a, keep, scale, one, zero): out <- (a keep) scale, dropout's A * M
    sigmoid_backward: Kernel  # (d, a, one): d <- d (1 - a) a
    dropout_sigmoid_backward: Kernel  # (d, keep, a, scale, one, zero): d <- ((d keep) scale) ((1 - a) a)
    bias_halve: Kernel  # (z, b, half): z <- (z + b) half, b broadcast over the rows of z
    shift_halve: Kernel  # (z, one, half): z <- (z + 1) half
    # z and e: a column-major (B, k) array, flat. Rows minus their max, then Z2[i, y_i]; -1 or a bad row:
    softmax_shift: Check  # (z, B, y, row_max, true_score)
    softmax_minus_onehot: Kernel  # (e, B, y, row_sum, B, one, zero, tiny): e <- (e / row sum - Y) / B, |e| < tiny to 0
    # dropout's keep masks from PCG64(SeedSequence(words)), numpy's bit for bit (nn.compiled_random):
    draw_keep: Kernel  # (words, keep0, threshold0, keep1, threshold1): keep <- 16-bit draw >= threshold, flat


_state: dict[str, Kernels | None] = {}


def kernels() -> Kernels | None:
    """The compiled kernels, or None where numba is absent or ``MLP_KERNELS=numpy``."""
    if _numpy_asked():
        return None
    if "kernels" not in _state:
        _state["kernels"] = _build()
    return _state["kernels"]


def warm_up() -> threading.Thread | None:
    """Import numba and start LLVM on a daemon thread (returned), so that the first training step
    does not wait for them (0.3-0.5 s). For a command that loads data first; None where the numpy
    forms are asked for, numba is absent or the kernels are ready. The thread only imports and
    calls: ``kernels()`` builds its cache on the caller's thread, so nothing the thread does
    decides it."""
    if _numpy_asked() or "kernels" in _state or importlib.util.find_spec("numba") is None:
        return None
    thread = threading.Thread(target=_start_llvm, name="mlp-kernels-warm-up", daemon=True)
    thread.start()
    return thread


def _start_llvm() -> None:
    try:
        compiled = importlib.import_module("mlp_cli.nn.compiled")  # imports numba
    except Exception:  # as in _build: the first step will find the numpy forms
        return
    one = np.ones(1, np.float32)  # the first call starts LLVM and loads the cached code; others take ms
    compiled.shift_halve(one, np.float32(1.0), np.float32(0.5))


def kernel_name(load: bool = True) -> str:
    """Which form the optimiser updates run in this process: "numba" or "numpy". ``load=False``
    tells it without importing numba (0.15 s), from whether it is installed (``mlp info``)."""
    if not load and "kernels" not in _state:
        return "numpy" if _numpy_asked() or importlib.util.find_spec("numba") is None else "numba"
    return "numpy" if kernels() is None else "numba"


def _numpy_asked() -> bool:
    return os.environ.get(KERNELS_VARIABLE, "").strip().lower() == "numpy"


def fits(*arrays: np.ndarray) -> bool:
    """Whether the kernels can take these arrays: C-contiguous, at least 1-D, one float dtype (a
    boolean mask may be among them)."""
    dtypes = (arrays[0].dtype, np.bool_)
    for a in arrays:  # a plain loop: called several times a step, a generator costs more than the test
        if not (a.ndim >= 1 and a.flags.c_contiguous and a.dtype in dtypes):
            return False
    return True


def run(kernel: Kernel, arrays: tuple[np.ndarray, ...], scalars: tuple[float | bool, ...] = ()) -> None:
    """``kernel`` over the arrays' entries (flat views), the float scalars cast to their dtype."""
    cast = arrays[0].dtype.type
    kernel(*[a.reshape(-1) for a in arrays], *[x if x.__class__ is bool else cast(x) for x in scalars])


def _build() -> Kernels | None:
    try:
        compiled = importlib.import_module("mlp_cli.nn.compiled")  # imports numba
    except Exception:  # numba not installed (ImportError), or unusable: the numpy forms run
        return None
    names = [f.name for f in fields(Kernels)]
    return Kernels(**{name: getattr(compiled, name) for name in names})
