"""The two-layer network and its hand-derived gradients.

Rows are examples. With X (B, d) a batch of inputs and y (B,) its integer labels:

    Z1 = X W1 + b1          (B, h)     hidden pre-activations
    A1 = sigmoid(Z1)        (B, h)     hidden activations
    Z2 = A1 W2 + b2         (B, k)     class scores (logits)
    P  = softmax(Z2)        (B, k)     class probabilities, row-wise
    J  = -(1/B) sum_i log P[i, y_i]    mean cross-entropy

Backpropagation is the chain rule applied to these lines from the bottom up. Because the loss
is the cross-entropy of a softmax, the two derivatives collapse into dJ/dZ2 = (P - Y) / B with Y
the one-hot labels; that shortcut holds only for this pairing (softmax output, cross-entropy loss,
and labels that sum to one per row). The sigmoid's derivative is taken from its saved output,
sigmoid'(Z1) = A1 (1 - A1), so Z1 itself need not be kept.

The L2 penalty lambda (|W1|^2 + |W2|^2) is added to the objective when ``l2 > 0`` and its gradient
2 lambda W to the weight gradients; biases are not penalised, and the loss that is *returned* is
the cross-entropy alone (what the CS229 problem reports and plots).

Numerics: the softmax subtracts each row's maximum before exponentiating and the loss is computed
as log-sum-exp minus the true class's score (never log of a probability, which can be 0); the
sigmoid uses 0.5 (1 + tanh(z / 2)), which cannot overflow and saturates to exactly 0 or 1 instead
of producing subnormal numbers (on which matrix products run many times slower).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

INPUTS = 784  # d: 28 x 28 pixels
CLASSES = 10  # k


@dataclass
class Params:
    """The network's parameters (or gradients of the same shapes); attribute or key access."""

    W1: np.ndarray  # (d, h)
    b1: np.ndarray  # (h,)
    W2: np.ndarray  # (h, k)
    b2: np.ndarray  # (k,)

    def __getitem__(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The arrays themselves, not copies: optimisers update them in place."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def copy(self) -> Params:
        return Params(**{name: array.copy() for name, array in self.as_dict().items()})

    @property
    def hidden(self) -> int:
        return int(self.W1.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.W1.dtype

    def count(self) -> int:
        return sum(array.size for array in self.as_dict().values())


Gradients = Params
PARAM_NAMES = ("W1", "b1", "W2", "b2")


def init_params(
    hidden: int,
    rng: np.random.Generator,
    init: str = "xavier",
    dtype: str | np.dtype = "float32",
    inputs: int = INPUTS,
    classes: int = CLASSES,
) -> Params:
    """Initial weights from ``rng``; biases start at 0.

    ``normal``: every weight N(0, 1), as in CS229. ``xavier``/``glorot``: U(-a, a) with
    a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010). Drawn in float64 then cast, so a
    float32 and a float64 network from the same seed start from the same numbers.
    """
    shapes = {"W1": (inputs, hidden), "W2": (hidden, classes)}
    weights = {}
    for name, (fan_in, fan_out) in shapes.items():
        if init == "normal":
            weights[name] = rng.standard_normal((fan_in, fan_out))
        elif init in ("xavier", "glorot"):
            a = np.sqrt(6.0 / (fan_in + fan_out))
            weights[name] = rng.uniform(-a, a, size=(fan_in, fan_out))
        else:
            raise ValueError(f"unknown init {init!r}")
    return Params(
        W1=weights["W1"].astype(dtype),
        b1=np.zeros(hidden, dtype=dtype),
        W2=weights["W2"].astype(dtype),
        b2=np.zeros(classes, dtype=dtype),
    )


# --------------------------------------------------------------------------------------------
# The two nonlinearities, each beside its derivative


def sigmoid(Z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """sigmoid(z) = 1 / (1 + e^-z) = 0.5 (1 + tanh(z / 2)): no overflow, no subnormals."""
    out = np.multiply(Z, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


def sigmoid_grad_from_output(A: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """sigmoid'(z) = sigmoid(z) (1 - sigmoid(z)) = A (1 - A), from the saved output A."""
    out = np.subtract(1.0, A, out=out)
    out *= A
    return out


def log_softmax(Z: np.ndarray) -> np.ndarray:
    """log softmax(z)_j = z_j - max(z) - log sum_l exp(z_l - max(z)), row-wise; stable."""
    S = Z - Z.max(axis=1, keepdims=True)
    S -= np.log(np.exp(S).sum(axis=1, keepdims=True))
    return S


def softmax(Z: np.ndarray) -> np.ndarray:
    """softmax(z)_j = exp(z_j - max(z)) / sum_l exp(z_l - max(z)), row-wise."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    E /= E.sum(axis=1, keepdims=True)
    return E


# --------------------------------------------------------------------------------------------
# Forward pass and loss


def forward(params: Params, X: np.ndarray) -> np.ndarray:
    """Class probabilities P (B, k) for inputs X (B, d)."""
    return softmax(logits(params, X))


def logits(params: Params, X: np.ndarray) -> np.ndarray:
    """Class scores Z2 (B, k) for inputs X (B, d)."""
    A1 = sigmoid(X @ params.W1 + params.b1)  # (B, h)
    return A1 @ params.W2 + params.b2  # (B, k)


def cross_entropy(Z2: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example loss -log P[i, y_i] = logsumexp(Z2[i]) - Z2[i, y_i], shape (B,)."""
    return -log_softmax(Z2)[np.arange(len(y)), y]


def l2_penalty(params: Params, l2: float) -> float:
    """lambda (||W1||^2 + ||W2||^2)."""
    return float(l2 * (np.vdot(params.W1, params.W1) + np.vdot(params.W2, params.W2)))


# --------------------------------------------------------------------------------------------
# Backpropagation


class Workspace:
    """Buffers reused from one training step to the next, so the hot loop allocates nothing.

    Pass the same Workspace to every ``loss_and_gradients`` call of a run; the returned
    gradients then live in it and are overwritten by the next call. ``loss_and_accuracy``
    keeps its own (differently named) buffers in it too.

    Layout, for speed only: the (B, k) class-score buffers are column-major (``order="F"``).
    numpy reduces a row-major (B, 10) array over its rows one tiny 10-element loop per row; a
    column-major one in 10 vectorised passes, which makes the softmax's row max and row sum
    about 10x cheaper. Indexing and the math are unchanged: it is still Z2[i, j].
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: np.dtype, order: Literal["C", "F"] = "C"
    ) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype=dtype, order=order)
        return buf

    def ones(self, n: int, dtype: np.dtype) -> np.ndarray:
        """A vector of n ones (a sum over rows as a product: 1^T M = the column sums of M)."""
        buf = self._buffers.get("ones")
        if buf is None or len(buf) < n or buf.dtype != dtype:
            buf = self._buffers["ones"] = np.ones(n, dtype=dtype)
        return buf[:n]

    def rows(self, n: int) -> np.ndarray:
        """0, 1, ..., n-1: with the labels y it picks P[i, y_i] out of P."""
        buf = self._buffers.get("rows")
        if buf is None or len(buf) < n:
            buf = self._buffers["rows"] = np.arange(n)
        return buf[:n]


def flush_subnormals(A: np.ndarray) -> np.ndarray:
    """Set the entries of A smaller in magnitude than the smallest normal number to 0, in place.

    Why: a matrix product whose input holds subnormal numbers (below 1.2e-38 in float32) runs
    several times slower on x86 CPUs, and numpy cannot switch on the processor's flush-to-zero
    mode. With the CS229 setting (N(0, 1) weights, learning rate 5) the softmax becomes so
    confident that a fraction of a percent of (P - Y) / B is subnormal; flushing those entries of
    the small (B, k) array before it enters two products costs a few microseconds and changes
    nothing above the dtype's rounding level.
    """
    np.copyto(A, 0, where=np.abs(A) < np.finfo(A.dtype).tiny)
    return A


def loss_and_gradients(
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    l2: float = 0.0,
    workspace: Workspace | None = None,
) -> tuple[float, Gradients]:
    """Mean cross-entropy of the batch and the gradients of the (regularised) objective.

    X: (B, d) float, y: (B,) int labels. Returns the loss *without* the L2 term and gradients
    with the parameters' shapes and dtype. Everything is batched: no per-example loop.
    """
    W1, W2 = params.W1, params.W2
    B, h, k = X.shape[0], W1.shape[1], W2.shape[1]
    ws = workspace if workspace is not None else Workspace()
    dtype = W1.dtype
    rows = ws.rows(B)

    # ---- forward (in place: Z1 is overwritten by A1) -----------------------------------------
    b1, b2 = params.b1, params.b2
    A1 = np.matmul(X, W1, out=ws.get("A1", (B, h), dtype))  # X W1                            (B, h)
    A1 += b1  # Z1 = X W1 + b1                                                                   (B, h)
    sigmoid(A1, out=A1)  # A1 = sigmoid(Z1), in place: Z1 is not needed again                    (B, h)
    A1W2 = np.matmul(A1, W2, out=ws.get("A1W2", (B, k), dtype))  # A1 W2                      (B, k)
    Z2 = np.add(A1W2, b2, out=ws.get("Z2", (B, k), dtype, order="F"))  # Z2 = A1 W2 + b2          (B, k)
    Z2 -= Z2.max(axis=1, keepdims=True)  # shift each row by its max: softmax unchanged, exp safe
    P = np.exp(Z2, out=ws.get("P", (B, k), dtype, order="F"))
    sum_exp = P.sum(axis=1, keepdims=True)  # (B, 1)
    # J = -(1/B) sum_i log P[i, y_i],  log P[i, y_i] = Z2[i, y_i] - log sum_j exp(Z2[i, j])
    loss = float(np.log(sum_exp).sum() - Z2[rows, y].sum()) / B
    P /= sum_exp  # P = softmax(Z2)                                                          (B, k)

    # ---- backward ---------------------------------------------------------------------------
    dZ2 = P  # reuse P's buffer: it is not needed after this line
    dZ2[rows, y] -= 1.0  # dJ/dz2 = yhat - y  (Y one-hot, never materialised)                (B, k)
    dZ2 /= B  # the loss is a mean over the batch                                            (B, k)
    flush_subnormals(dZ2)  # (see its docstring: keeps the next two products fast)
    dW2 = np.matmul(A1.T, dZ2, out=ws.get("dW2", (h, k), dtype))  # dJ/dW2 = a1 (yhat - y)^T  (h, k)
    db2 = np.sum(dZ2, axis=0, out=ws.get("db2", (k,), dtype))  # dJ/db2 = yhat - y            (k,)
    dA1 = np.matmul(dZ2, W2.T, out=ws.get("dA1", (B, h), dtype))  # W2 (yhat - y)             (B, h)
    dZ1 = dA1  # in place: dA1 is not needed after this line
    dZ1 *= sigmoid_grad_from_output(A1, out=ws.get("S", (B, h), dtype))  # dJ/dz1 = (W2 (yhat - y)) * a1 (1 - a1)
    dW1 = np.matmul(X.T, dZ1, out=ws.get("dW1", W1.shape, dtype))  # dJ/dW1 = x (dJ/dz1)^T   (d, h)
    # dJ/db1 = dJ/dz1 summed over the batch, written 1^T dZ1: a BLAS product on every core   (h,)
    db1 = np.matmul(ws.ones(B, dtype), dZ1, out=ws.get("db1", (h,), dtype))

    if l2 > 0.0:  # J_reg = J + lambda (|W1|^2 + |W2|^2):  dJ_reg/dW = dJ/dW + 2 lambda W
        dW1 += np.multiply(W1, 2.0 * l2, out=ws.get("2 lambda W1", W1.shape, dtype))
        dW2 += np.multiply(W2, 2.0 * l2, out=ws.get("2 lambda W2", W2.shape, dtype))
    return loss, Gradients(W1=dW1, b1=db1, W2=dW2, b2=db2)


EVAL_BLOCK = 2_000  # rows per block in loss_and_accuracy: a (block, h) activation stays in cache


def loss_and_accuracy(
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    block: int = EVAL_BLOCK,
    workspace: Workspace | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, computed block by block.

    Per row: the loss logsumexp(Z2) - Z2[i, y_i] and whether the highest score is the true
    class. Pass the training run's Workspace to keep the block buffers between calls.

    The forward pass here needs the scores Z2 only, never A1, so the sigmoid's halving and
    shifting are moved into the weights, once per call instead of on every activation:

        sigmoid(z) = (1 + tanh(z / 2)) / 2, hence with T = tanh(X (W1 / 2) + b1 / 2),
        Z2 = sigmoid(X W1 + b1) W2 + b2 = T (W2 / 2) + (b2 + 1^T W2 / 2)

    Two elementwise passes over each (block, h) activation instead of five, the same numbers up
    to float rounding (halving is exact, so T is bit for bit the tanh of the training pass).
    """
    ws = workspace if workspace is not None else Workspace()
    W1, W2 = params.W1, params.W2
    h, k, dtype = W1.shape[1], W2.shape[1], W1.dtype
    half = dtype.type(0.5)
    W1_half = np.multiply(W1, half, out=ws.get("eval.W1/2", W1.shape, dtype))  # W1 / 2      (d, h)
    b1_half = params.b1 * half  # b1 / 2                                                         (h,)
    W2_half = W2 * half  # W2 / 2                                                                (h, k)
    with np.errstate(over="ignore"):
        b2_shifted = params.b2 + W2_half.sum(axis=0)  # b2 + 1^T W2 / 2                          (k,)
    # with weights near the dtype's limit the column sums overflow (and the two terms would
    # cancel as inf - inf): then A1 = (1 + T) / 2 is formed and used as in training
    folded = bool(np.isfinite(b2_shifted).all())
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), block):
        labels = y[start : start + block]
        n = len(labels)
        T = np.matmul(X[start : start + block], W1_half, out=ws.get("eval.T", (n, h), dtype))
        T += b1_half
        np.tanh(T, out=T)  # T = tanh(Z1 / 2)                                                   (n, h)
        if folded:
            TW2 = np.matmul(T, W2_half, out=ws.get("eval.TW2", (n, k), dtype))
            Z2 = np.add(TW2, b2_shifted, out=ws.get("eval.Z2", (n, k), dtype, order="F"))  # (n, k)
        else:
            T += 1.0
            T *= half  # A1 = sigmoid(Z1)
            A1W2 = np.matmul(T, W2, out=ws.get("eval.TW2", (n, k), dtype))
            Z2 = np.add(A1W2, params.b2, out=ws.get("eval.Z2", (n, k), dtype, order="F"))  # (n, k)
        Z2 -= Z2.max(axis=1, keepdims=True)  # the row max becomes 0: same argmax, exp safe
        correct += int(np.count_nonzero(Z2.argmax(axis=1) == labels))
        E = np.exp(Z2, out=ws.get("eval.E", (n, k), dtype, order="F"))
        # -log P[i, y_i] = log sum_j exp(Z2[i, j]) - Z2[i, y_i]   (after the shift)
        losses = np.log(E.sum(axis=1)) - Z2[ws.rows(n), labels]
        total_loss += float(losses.sum(dtype=np.float64))
    count = max(len(y), 1)
    return total_loss / count, correct / count
