"""Loss and accuracy over a whole split: the plain reference, then the tuned pass training runs.

``plain_loss_and_accuracy`` is the forward pass of ``mlp_cli.nn.network`` and nothing else.
``loss_and_accuracy`` gives the same numbers block by block, in the buffers of an
:class:`EvalBuffers`, with the sigmoid folded into the weights (see its docstring); a test holds
the two equal in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlp_cli.nn.backprop import forward_into
from mlp_cli.nn.loss import CROSS_ENTROPY, shifted_cross_entropy_sum
from mlp_cli.nn.network import Params, logits
from mlp_cli.nn.workspace import Layout, Workspace, buffer, layout

EVAL_BLOCK = 2_000  # rows per block: a (block, h) activation stays in cache


def plain_loss_and_accuracy(params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The reference: mean cross-entropy and the fraction of rows whose top score is the label."""
    Z2 = logits(params, X)  # (n, k)
    return CROSS_ENTROPY.value(Z2, y), float(np.mean(Z2.argmax(axis=1) == y))


@dataclass
class EvalBuffers:
    """The arrays of one evaluation block of n rows (d inputs, h hidden units, k classes)."""

    W1_half: np.ndarray = buffer("d", "h")  # W1 / 2
    b1_half: np.ndarray = buffer("h")  # b1 / 2
    W2_half: np.ndarray = buffer("h", "k")  # W2 / 2
    b2_shifted: np.ndarray = buffer("k")  # b2 + 1^T W2 / 2
    T: np.ndarray = buffer("n", "h")  # tanh(Z1 / 2), or A1 when not folded
    TW2: np.ndarray = buffer("n", "k")  # T @ (W2 / 2), or A1 @ W2
    Z2: np.ndarray = buffer("n", "k", order="F")  # class scores
    E: np.ndarray = buffer("n", "k", order="F")  # exp(Z2 - row max)
    rows: np.ndarray = buffer("n", kind="index", fill="arange")  # 0, 1, ..., n - 1


def evaluation_layout(rows: int, inputs: int, hidden: int, classes: int, block: int = EVAL_BLOCK) -> list[Layout]:
    """Every array ``loss_and_accuracy`` keeps in its workspace for a split of ``rows`` rows."""
    return layout(EvalBuffers, {"n": min(block, rows), "d": inputs, "h": hidden, "k": classes})


def loss_and_accuracy(
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    block: int = EVAL_BLOCK,
    workspace: Workspace | None = None,
    scores: np.ndarray | None = None,
) -> tuple[float, float]:
    """What ``plain_loss_and_accuracy`` computes, tuned: mean cross-entropy and accuracy.

    Per row: the loss logsumexp(Z2) - Z2[i, y_i] (summed by ``nn.loss.shifted_cross_entropy_sum``)
    and whether the highest score is the true class. Pass the training run's Workspace to keep
    the block buffers between calls, and ``scores`` (n, k) to receive each row's class scores,
    shifted so that their maximum is 0 (softmax and argmax unchanged): ``mlp eval`` builds its
    report from the very pass whose loss and accuracy it prints.

    The forward pass here needs the scores Z2 only, never A1, so the sigmoid's halving and
    shifting are moved into the weights, once per call instead of on every activation:

        sigmoid(z) = (1 + tanh(z / 2)) / 2, hence with T = tanh(X @ (W1 / 2) + b1 / 2),
        Z2 = sigmoid(X @ W1 + b1) @ W2 + b2 = T @ (W2 / 2) + (b2 + 1^T W2 / 2)

    Two elementwise passes over each (block, h) activation instead of five, the same numbers up
    to float rounding (halving is exact, so T is bit for bit the tanh of the training pass where
    training uses the tanh form, ``backprop.sigmoid_form``; where it uses the exp form, the two
    agree to float rounding).
    """
    ws = workspace if workspace is not None else Workspace()
    W1, W2 = params.W1, params.W2
    sizes = {"n": min(block, len(y)), "d": W1.shape[0], "h": W1.shape[1], "k": W2.shape[1]}
    buf = ws.get(EvalBuffers, sizes, W1.dtype)
    folded = fold_sigmoid(params, buf)
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), block):
        labels = y[start : start + block]
        n = len(labels)
        T, TW2, Z2, E = buf.T[:n], buf.TW2[:n], buf.Z2[:n], buf.E[:n]
        if folded:
            np.matmul(X[start : start + block], buf.W1_half, out=T)
            T += buf.b1_half
            np.tanh(T, out=T)  # T = tanh(Z1 / 2)                                               (n, h)
            np.matmul(T, buf.W2_half, out=TW2)
            np.add(TW2, buf.b2_shifted, out=Z2)  # Z2 = T @ (W2 / 2) + (b2 + 1^T W2 / 2)        (n, k)
        else:
            forward_into(params, X[start : start + block], T, TW2, Z2)  # Z2 = A1 @ W2 + b2    (n, k)
        Z2 -= Z2.max(axis=1, keepdims=True)  # the row max becomes 0: same argmax, exp safe
        if scores is not None:
            scores[start : start + n] = Z2
        correct += int(np.count_nonzero(Z2.argmax(axis=1) == labels))
        total_loss += shifted_cross_entropy_sum(Z2, labels, E, buf.rows[:n])  # sum_i -log P[i, y_i]
    count = max(len(y), 1)
    return total_loss / count, correct / count


def fold_sigmoid(params: Params, buf: EvalBuffers) -> bool:
    """Fill W1 / 2, b1 / 2, W2 / 2 and b2 + 1^T W2 / 2; False when the last overflows.

    With weights near the dtype's limit the column sums of W2 / 2 overflow (and would cancel as
    inf - inf against the tanh term): then the plain forward pass is used instead.
    """
    half = params.dtype.type(0.5)
    np.multiply(params.W1, half, out=buf.W1_half)  # W1 / 2                                    (d, h)
    np.multiply(params.b1, half, out=buf.b1_half)  # b1 / 2                                     (h,)
    np.multiply(params.W2, half, out=buf.W2_half)  # W2 / 2                                     (h, k)
    with np.errstate(over="ignore"):
        np.sum(buf.W2_half, axis=0, out=buf.b2_shifted)  # 1^T W2 / 2                           (k,)
        buf.b2_shifted += params.b2  # b2 + 1^T W2 / 2                                           (k,)
    return bool(np.isfinite(buf.b2_shifted).all())
