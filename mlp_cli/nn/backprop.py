"""Backpropagation: the README's equations as a plain reference, and the tuned step training runs.

``backprop`` is the batched derivation the README gives ("The network and its gradients"), one
line per equation, in row notation (X is (B, d), rows are examples). Read it first.
Backpropagation is the chain rule applied to the forward lines from the bottom up. It starts from
the loss unit's dJ/dZ2 (``nn.loss``): for the cross-entropy of a softmax the two derivatives
collapse into dJ/dZ2 = (P - Y) / B with Y the one-hot labels (``nn.loss`` says when that holds).
The sigmoid's derivative is taken from its saved output, A1 (1 - A1), so Z1 need not be kept.
Dropout (``nn.dropout``) adds three products with its masks and changes nothing else; without
masks the lines are the README's equations.

``loss_and_gradients`` computes the same numbers with the buffers of a :class:`StepBuffers`
(allocated once per batch shape, so the hot loop allocates no arrays; numpy keeps its own fixed
iterator buffers for the two broadcast additions) and in-place kernels named
for what they compute. A test holds it equal to ``backprop`` in float64. What it does for speed:
Z1 becomes A1 in place and Z2 becomes P, then dZ2, in place; Y is never materialised; the
(B, k) buffers are column-major, which makes numpy's row max and row sum over 10 columns about
10x cheaper (the math and the indexing are unchanged); subnormal entries of dZ2 are flushed to 0
before the two products that read it; db1 = 1^T dZ1 is a BLAS product rather than a reduction.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache, partial

import numpy as np

from mlp_cli.nn import fused
from mlp_cli.nn.dropout import NO_MASKS, HiddenMaskBuffers, InputMaskBuffers, Masks
from mlp_cli.nn.loss import LOSSES, inplace_softmax_minus_onehot
from mlp_cli.nn.network import Params, sigmoid, sigmoid_grad_from_output
from mlp_cli.nn.parallel import for_row_blocks, rows_cols
from mlp_cli.nn.workspace import Layout, Workspace, buffer, layout


def backprop(
    params: Params, X: np.ndarray, y: np.ndarray, l2: float = 0.0, masks: Masks | None = None,
    loss_name: str = "cross_entropy",
) -> tuple[float, Params]:
    """The reference: mean loss of the batch and the gradients of J + lambda (|W1|^2 + |W2|^2).

    X (B, d) float, y (B,) int labels; returns the loss without the L2 term and the gradients in a
    Params of the parameters' shapes. ``masks`` (dropout, see ``nn.dropout``) thin the inputs
    and the hidden units; without them every line is the README's equations. ``loss_name`` names the loss
    unit (``nn.loss.LOSSES``): J and dJ/dZ2 come from it, the lines below Z2 are the same for any.
    """
    W1, b1, W2, b2 = params.W1, params.b1, params.W2, params.b2
    M0, M1 = (masks.M0, masks.M1) if masks is not None else (None, None)  # 0 or 1 / (1 - p)
    unit = LOSSES[loss_name]  # the cross-entropy of P = softmax(Z2) unless another is named
    if M0 is not None:
        X = X * M0  # X~ = X * M0: input dropout                                              (B, d)
    Z1 = X @ W1 + b1  # Z1 = X W1 + b1                                                         (B, h)
    A1 = sigmoid(Z1)  # A1 = sigmoid(Z1)                                                       (B, h)
    H = A1 if M1 is None else A1 * M1  # A1~ = A1 * M1: hidden dropout (else A1~ = A1)        (B, h)
    Z2 = H @ W2 + b2  # Z2 = A1~ W2 + b2                                                       (B, k)
    J = unit.value(Z2, y)  # J = -(1/B) sum_i log P[i, y_i], P = softmax(Z2)                 ()
    dZ2 = unit.gradient(Z2, y)  # dJ/dZ2 = (P - Y) / B, Y one-hot                              (B, k)
    dW2 = H.T @ dZ2 + 2 * l2 * W2  # dJ/dW2 = A1~^T dZ2 (+ 2 lambda W2)                       (h, k)
    db2 = dZ2.sum(axis=0)  # dJ/db2 = sum over rows of dZ2                                    (k,)
    dA1 = dZ2 @ W2.T if M1 is None else (dZ2 @ W2.T) * M1  # dJ/dA1 = (dZ2 W2^T) * M1         (B, h)
    dZ1 = dA1 * A1 * (1 - A1)  # dJ/dZ1 = dA1 * A1 * (1 - A1)                                  (B, h)
    dW1 = X.T @ dZ1 + 2 * l2 * W1  # dJ/dW1 = X~^T dZ1 (+ 2 lambda W1)                         (d, h)
    db1 = dZ1.sum(axis=0)  # dJ/db1 = sum over rows of dZ1                                    (h,)
    return J, Params(W1=dW1, b1=db1, W2=dW2, b2=db2)


# --------------------------------------------------------------------------------------------
# The tuned step: its buffers, its kernels, then the step itself


@dataclass
class StepBuffers:
    """The arrays one training step writes, for a batch of B rows (d inputs, h hidden, k classes)."""

    A1: np.ndarray = buffer("B", "h")  # Z1, then A1 = sigmoid(Z1) in place
    A1W2: np.ndarray = buffer("B", "k")  # A1 @ W2 as BLAS writes it (row-major)
    Z2: np.ndarray = buffer("B", "k", order="F")  # Z2, then P, then dZ2 in place
    row_max: np.ndarray = buffer("B", 1)  # max_j Z2[i, j]
    row_sum: np.ndarray = buffer("B", 1)  # sum_j exp(Z2[i, j]), after the shift
    log_row_sum: np.ndarray = buffer("B", 1)  # log of it
    true_score: np.ndarray = buffer("B")  # Z2[i, y_i]
    flat_index: np.ndarray = buffer("B", kind="index")  # i + B y_i: where Z2[i, y_i] is in Z2's memory
    magnitude: np.ndarray = buffer("B", "k", order="F")  # |dZ2|, for flush_subnormals
    subnormal: np.ndarray = buffer("B", "k", order="F", kind="mask")  # |dZ2| < the smallest normal
    dZ1: np.ndarray = buffer("B", "h")  # dA1 = dZ2 @ W2.T, then dZ1 in place
    S: np.ndarray = buffer("B", "h")  # A1 (1 - A1)
    ones: np.ndarray = buffer("B", fill="ones")  # 1, for db1 = 1^T dZ1
    rows: np.ndarray = buffer("B", kind="index", fill="arange")  # 0, 1, ..., B - 1
    dW1: np.ndarray = buffer("d", "h")
    db1: np.ndarray = buffer("h")
    dW2: np.ndarray = buffer("h", "k")
    db2: np.ndarray = buffer("k")


@dataclass
class L2Buffers:
    """The L2 term's gradients 2 lambda W, only when l2 > 0."""

    W1: np.ndarray = buffer("d", "h")
    W2: np.ndarray = buffer("h", "k")


def step_layout(batch_size: int, inputs: int, hidden: int, classes: int, l2: float = 0.0) -> list[Layout]:
    """Every array ``loss_and_gradients`` keeps in its workspace for these sizes and this ``l2``
    (for ``mlp info``; training passes 0: its L2 term is the optimiser's)."""
    sizes = {"B": batch_size, "d": inputs, "h": hidden, "k": classes}
    return layout(StepBuffers, sizes) + (layout(L2Buffers, sizes) if l2 > 0 else [])


# The sigmoid's two forms differ in speed by CPU: numpy's SIMD tanh (AVX512_SKX) makes
# 0.5 (1 + tanh(z / 2)) the faster on AVX-512 CPUs (0.20 against 0.34 ms on 1000x300 float32, Intel
# Xeon; 0.10 against 0.29 ms on an AVX-512 AMD EPYC), 1 / (1 + exp(min(-z, 80))) elsewhere (0.84
# against 1.59 ms, AVX2 EPYC). The form is picked once per process from numpy's CPU features, not
# by timing, so a machine always picks the same one and a run resumed on it continues
# bit-identically; the two agree to the dtype's rounding (a test), not to the last bit.
SIGMOID_FORMS = ("tanh", "exp")


def sigmoid_form() -> str:
    """The form ``inplace_sigmoid`` uses on this CPU: "tanh" with AVX512_SKX, else "exp"."""
    if "sigmoid" not in _chosen:
        core = "numpy._core" if hasattr(np, "_core") else "numpy.core"  # numpy 2, numpy 1
        features = importlib.import_module(f"{core}._multiarray_umath").__cpu_features__
        _chosen["sigmoid"] = "tanh" if features.get("AVX512_SKX") else "exp"
    return _chosen["sigmoid"]


_chosen: dict[str, str] = {}


def inplace_sigmoid(Z: np.ndarray, form: str | None = None) -> np.ndarray:
    """Z <- sigmoid(Z), in this CPU's faster form (``sigmoid_form``) unless ``form`` names one."""
    if (form or sigmoid_form()) == "tanh":
        return sigmoid(Z, out=Z)  # 0.5 (1 + tanh(z / 2))
    np.negative(Z, out=Z)
    np.minimum(Z, 80.0, out=Z)  # exp(80) is finite in float32: no overflow, and 1 / (1 + e^80) is normal
    np.exp(Z, out=Z)
    Z += 1.0
    return np.reciprocal(Z, out=Z)  # 1 / (1 + exp(-z))


def inplace_sigmoid_derivative(A: np.ndarray, delta: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """delta <- delta * A (1 - A): from dJ/dA to dJ/dZ through A = sigmoid(Z)."""
    delta *= sigmoid_grad_from_output(A, out=scratch)
    return delta


def forward_into(params: Params, X: np.ndarray, A1: np.ndarray, A1W2: np.ndarray, Z2: np.ndarray) -> None:
    """The forward pass into given buffers: A1 = sigmoid(X @ W1 + b1) (n, h), Z2 = A1 @ W2 + b2 (n, k)."""
    hidden_into(params, X, A1)
    scores_into(params, A1, A1W2, Z2)


def hidden_into(params: Params, X: np.ndarray, A1: np.ndarray, fast: fused.Kernels | None = None) -> None:
    """A1 = sigmoid(X @ W1 + b1) (n, h), into the given buffer; with ``fast`` (``fused.kernels()``,
    which training passes and evaluation does not, to start without numba) the tanh form's
    passes around tanh are compiled, bit-identical."""
    np.matmul(X, params.W1, out=A1)  # X @ W1                                              (n, h)
    if fast is not None and sigmoid_form() == "tanh" and fused.fits(A1, params.b1):
        fused.run(fast.bias_halve, (A1, params.b1), (0.5,))  # Z1 / 2 = (X @ W1 + b1) / 2
        np.tanh(A1, out=A1)
        fused.run(fast.shift_halve, (A1,), (1.0, 0.5))  # A1 = (1 + tanh(Z1 / 2)) / 2
    else:
        for_row_blocks(partial(_bias_sigmoid_rows, A1, params.b1), *A1.shape)


def _bias_sigmoid_rows(A1: np.ndarray, b1: np.ndarray, rows: slice) -> None:
    block = A1[rows]
    block += b1  # Z1 = X @ W1 + b1                                                          (n, h)
    inplace_sigmoid(block)  # A1 = sigmoid(Z1); Z1 is not needed again                       (n, h)


def hidden_backward(A1: np.ndarray, dZ1: np.ndarray, masks: Masks, S: np.ndarray, fast: fused.Kernels | None) -> None:
    """dZ1 <- dA1 * M1 * A1 (1 - A1) in place (M1 = 1 without hidden dropout): through the mask,
    then the sigmoid. In row blocks on every thread; one pass with ``fast`` (``fused.kernels()``,
    bit-identical)."""
    keep = masks.hidden
    one = (1.0,)
    if fast is not None and fused.fits(dZ1, A1) and keep is None:
        fused.run(fast.sigmoid_backward, (dZ1, A1), one)
    elif fast is not None and keep is not None and fused.fits(dZ1, keep, A1):
        scalars = (masks.hidden_scale, 1.0, 0.0)
        fused.run(fast.dropout_sigmoid_backward, (dZ1, keep, A1), scalars)
    else:
        for_row_blocks(partial(_hidden_backward_rows, A1, dZ1, masks, S), *dZ1.shape)


def _hidden_backward_rows(A1: np.ndarray, dZ1: np.ndarray, masks: Masks, S: np.ndarray, rows: slice) -> None:
    if masks.hidden is not None:  # dA1 = (dZ2 @ W2.T) * M1                                   (B, h)
        thin_into(dZ1[rows], masks.hidden[rows], masks.hidden_scale, dZ1[rows])
    inplace_sigmoid_derivative(A1[rows], dZ1[rows], S[rows])  # dZ1 = dA1 * A1 * (1 - A1)     (B, h)


def scores_into(params: Params, A1: np.ndarray, A1W2: np.ndarray, Z2: np.ndarray) -> None:
    """Z2 = A1 @ W2 + b2 (n, k), into the given buffers (A1W2 row-major, Z2 any order)."""
    np.matmul(A1, params.W2, out=A1W2)  # A1 @ W2                                           (n, k)
    np.add(A1W2, params.b2, out=Z2)  # Z2 = A1 @ W2 + b2                                     (n, k)


def thin_into(A: np.ndarray, keep: np.ndarray, scale: float, out: np.ndarray) -> np.ndarray:
    """out <- A * M = (A * keep) * scale, M a dropout mask (``nn.dropout``); out may be A."""
    np.multiply(A, keep, out=out)
    out *= scale
    return out


def thin(A: np.ndarray, keep: np.ndarray, scale: float, out: np.ndarray, fast: fused.Kernels | None) -> np.ndarray:
    """``thin_into`` in row blocks on every thread, or in one pass with ``fast`` (bit-identical)."""
    if fast is not None and fused.fits(out, A, keep):
        fused.run(fast.thin, (out, A, keep), (scale, 1.0, 0.0))
    else:
        for_row_blocks(partial(_thin_rows, A, keep, scale, out), *out.shape)
    return out


def _thin_rows(A: np.ndarray, keep: np.ndarray, scale: float, out: np.ndarray, rows: slice) -> None:
    thin_into(A[rows], keep[rows], scale, out[rows])


def flush_subnormals(A: np.ndarray, magnitude: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Set the entries of A smaller in magnitude than the smallest normal number to 0, in place.

    Why: a matrix product whose input holds subnormal numbers (below 1.2e-38 in float32) runs
    several times slower on x86 CPUs, and numpy cannot switch on the processor's flush-to-zero
    mode. With the CS229 setting (N(0, 1) weights, learning rate 5) the softmax becomes so
    confident that a fraction of a percent of (P - Y) / B is subnormal; flushing those entries of
    the small (B, k) array before it enters two products costs a few microseconds and changes
    nothing above the dtype's rounding level. ``magnitude`` and ``mask`` are scratch of A's shape.
    """
    np.less(np.abs(A, out=magnitude), np.finfo(A.dtype).tiny, out=mask)
    np.copyto(A, 0, where=mask)
    return A


def output_delta(Z2: np.ndarray, y: np.ndarray, buf: StepBuffers, fast: fused.Kernels | None) -> float:
    """J, and Z2 <- dZ2 = (P - Y) / B with its subnormal entries flushed to 0: ``nn.loss``'s
    ``inplace_softmax_minus_onehot`` and ``flush_subnormals``, or with ``fast`` the same float
    operations in two compiled passes around numpy's exp and log (bit-identical; a test)."""
    B = Z2.shape[0]
    # one row is also C-contiguous, and numpy then sums it pairwise, not column by column
    if fast is None or B < 2 or not (Z2.flags.f_contiguous and Z2.dtype == buf.row_sum.dtype):
        loss = inplace_softmax_minus_onehot(Z2, y, buf)
        flush_subnormals(Z2, buf.magnitude, buf.subnormal)
        return loss
    cells, cast = Z2.reshape(-1, order="F"), Z2.dtype.type  # entry (i, j) at i + B j
    row_sum = buf.row_sum.reshape(-1)
    bad = fast.softmax_shift(cells, B, y, buf.row_max.reshape(-1), buf.true_score)  # Z2 - max; Z2[i, y_i]
    if bad >= 0:
        raise IndexError(f"label {y[bad]} of row {bad} is out of range for {Z2.shape[1]} classes")
    np.exp(Z2, out=Z2)  # exp(Z2)                                                              (B, k)
    fast.softmax_minus_onehot(cells, B, y, row_sum, cast(B), cast(1.0), cast(0.0), _tiny(Z2.dtype))
    np.log(buf.row_sum, out=buf.log_row_sum)  # log sum_j exp(Z2[i, j])
    total = np.add.reduce  # the sum .sum() runs, without its wrapper
    return float(total(buf.log_row_sum, axis=None) - total(buf.true_score, axis=None)) / B  # J


@cache
def _tiny(dtype: np.dtype) -> np.floating:
    """The smallest normal number of ``dtype`` (np.finfo's, looked up once a dtype)."""
    return np.finfo(dtype).tiny


def add_penalty(
    grad: np.ndarray, weight: np.ndarray, c: float, scratch: np.ndarray, fast: fused.Kernels | None
) -> None:
    """grad <- grad + c W (the L2 term's gradient, c = 2 lambda), in row blocks on every thread.

    In numpy two passes (``scratch = W c``, ``grad += scratch``); one with ``nn.fused``'s compiled
    kernel (``fast``), which computes the same two roundings per entry (bit-identical).
    """
    if fast is not None and fused.fits(grad, weight):
        fused.run(fast.add_scaled, (grad, weight), (c,))
    else:
        for_row_blocks(partial(_add_scaled_rows, grad, weight, c, scratch), *rows_cols(grad))


def _add_scaled_rows(grad: np.ndarray, weight: np.ndarray, c: float, scratch: np.ndarray, rows: slice) -> None:
    grad[rows] += np.multiply(weight[rows], c, out=scratch[rows])


def loss_and_gradients(
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    l2: float = 0.0,
    workspace: Workspace | None = None,
    masks: Masks | None = None,
) -> tuple[float, Params]:
    """What ``backprop`` computes, tuned: the batch's mean cross-entropy and the gradients.

    X (B, d) float, y (B,) int labels, ``masks`` the batch's dropout masks if any. The gradients
    (a Params of the parameters' shapes and dtype) live in ``workspace`` and are overwritten by
    its next call.
    """
    W1, W2 = params.W1, params.W2
    sizes = {"B": X.shape[0], "d": W1.shape[0], "h": W1.shape[1], "k": W2.shape[1]}
    ws = workspace if workspace is not None else Workspace()
    buf = ws.get(StepBuffers, sizes, W1.dtype)
    A1, Z2, dZ1 = buf.A1, buf.Z2, buf.dZ1
    dW1, db1, dW2, db2 = buf.dW1, buf.db1, buf.dW2, buf.db2
    masks = masks or NO_MASKS
    sizes_thin = {"B": sizes["B"], "d": sizes["d"], "h": sizes["h"]}  # the dropout buffers' sizes

    fast = fused.kernels()  # the compiled kernels, or None: the numpy forms
    if masks.inputs is not None:  # X~ = X * M0 = (X * keep0) / (1 - p0)                        (B, d)
        X = thin(X, masks.inputs, masks.input_scale, ws.get(InputMaskBuffers, sizes_thin, W1.dtype).X, fast)
    hidden_into(params, X, A1, fast)  # A1 = sigmoid(X @ W1 + b1)                               (B, h)
    H = A1  # A1~ = A1 * M1, or A1 without hidden dropout                                       (B, h)
    if masks.hidden is not None:
        H = thin(A1, masks.hidden, masks.hidden_scale, ws.get(HiddenMaskBuffers, sizes_thin, W1.dtype).A1, fast)
    scores_into(params, H, buf.A1W2, Z2)  # Z2 = A1~ @ W2 + b2                                 (B, k)
    loss = output_delta(Z2, y, buf, fast)  # J; Z2 <- dZ2 = (P - Y) / B, subnormals flushed     (B, k)
    dZ2 = Z2
    np.matmul(H.T, dZ2, out=dW2)  # dW2 = A1~.T @ dZ2                                          (h, k)
    np.add.reduce(dZ2, axis=0, out=db2)  # db2 = sum over rows of dZ2 (np.sum's own reduction)  (k,)
    np.matmul(dZ2, W2.T, out=dZ1)  # dA1 = dZ2 @ W2.T                                          (B, h)
    hidden_backward(A1, dZ1, masks, buf.S, fast)  # dZ1 = dA1 * M1 * A1 * (1 - A1)             (B, h)
    np.matmul(X.T, dZ1, out=dW1)  # dW1 = X~.T @ dZ1                                           (d, h)
    np.matmul(buf.ones, dZ1, out=db1)  # db1 = 1^T dZ1: the row sum as a BLAS product          (h,)
    if l2 > 0.0:
        penalty = ws.get(L2Buffers, sizes, W1.dtype)
        add_penalty(dW1, W1, 2.0 * l2, penalty.W1, fast)  # dW1 += 2 lambda W1                   (d, h)
        add_penalty(dW2, W2, 2.0 * l2, penalty.W2, fast)  # dW2 += 2 lambda W2                   (h, k)
    return loss, Params(W1=dW1, b1=db1, W2=dW2, b2=db2)
