"""The loss: its value J and its gradient with respect to the class scores, dJ/dZ2, side by side.

A loss unit reads the class scores Z2 (B, k) of a batch and its integer labels y (B,). It gives
the per-example losses, whose mean over the batch is J, and dJ/dZ2 (B, k), where
backpropagation (``nn.backprop``) starts. Nothing below Z2 depends on the loss: dW2 = A1^T dZ2
and every line after it are the same for any loss.

The loss trained here is the cross-entropy of the softmax (the README's "The network and its
gradients"):

    P      = softmax(Z2)                   (B, k)   row-wise
    J      = -(1/B) sum_i log P[i, y_i]    ()       as logsumexp(Z2[i]) - Z2[i, y_i], never log(P)
    dJ/dZ2 = (P - Y) / B                   (B, k)   Y the one-hot labels

When P - Y holds: through L = log softmax(Z2), dJ/dL = -Y / B, and the log-softmax's derivative
(``network.log_softmax_backward``) turns it into dL - P * sum_j dL_j = (P - Y) / B because each
row of Y sums to one. So the shortcut is the pairing of a softmax output with the cross-entropy
loss (and labels that sum to one per row), and nothing else: another loss, or the cross-entropy
of another output function, takes the whole chain rule (``network.softmax_backward`` carries a
gradient with respect to P back to Z2).

The tuned forms of the cross-entropy, held equal to it by a float64 test: the training step's
fused kernel ``inplace_softmax_minus_onehot`` (J and (P - Y) / B in one pass, in place) and the
evaluation's ``shifted_cross_entropy_sum``.

Trying another loss is a :class:`Loss` (its two functions) and one entry in ``LOSSES``: the
reference ``backprop`` and the gradient check (``nn.gradcheck``) take it by name. Training and
evaluation run the tuned cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mlp_cli.nn.network import log_softmax, softmax

if TYPE_CHECKING:
    from mlp_cli.nn.backprop import StepBuffers


@dataclass(frozen=True)
class Loss:
    """A loss unit: ``losses(Z2, y)`` the per-example losses (B,) of scores Z2 (B, k) for labels
    y (B,), and ``gradient(Z2, y)`` dJ/dZ2 (B, k) of their mean J."""

    losses: Callable[[np.ndarray, np.ndarray], np.ndarray]
    gradient: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def value(self, Z2: np.ndarray, y: np.ndarray) -> float:
        """J: the mean of the per-example losses over the batch."""
        return float(self.losses(Z2, y).mean())

    def uniform(self, classes: int) -> float:
        """The loss of a prediction that scores every class the same (log k for the cross-entropy):
        about where an untrained network starts."""
        return self.value(np.zeros((1, classes)), np.zeros(1, dtype=np.intp))


# --------------------------------------------------------------------------------------------
# The cross-entropy of the softmax, plain: the reference


def cross_entropy(Z2: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example loss -log P[i, y_i] = logsumexp(Z2[i]) - Z2[i, y_i], shape (B,)."""
    return -log_softmax(Z2)[np.arange(len(y)), y]


def cross_entropy_gradient(Z2: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dJ/dZ2 (B, k) of J = -(1/B) sum_i log P[i, y_i], P = softmax(Z2)."""
    B, k = Z2.shape
    P = softmax(Z2)  # P = softmax(Z2), row-wise                                               (B, k)
    Y = np.eye(k, dtype=Z2.dtype)[y]  # one-hot labels                                         (B, k)
    return (P - Y) / B  # dJ/dZ2 = (P - Y) / B: softmax with cross-entropy only (see above)    (B, k)


CROSS_ENTROPY = Loss(cross_entropy, cross_entropy_gradient)

LOSSES: dict[str, Loss] = {"cross_entropy": CROSS_ENTROPY}


# --------------------------------------------------------------------------------------------
# Its tuned forms: the training step's and the evaluation's


def inplace_softmax_minus_onehot(Z2: np.ndarray, y: np.ndarray, buf: StepBuffers) -> float:
    """Z2 <- (softmax(Z2) - Y) / B, row-wise, Y one-hot; returns J = -(1/B) sum_i log P[i, y_i].

    ``CROSS_ENTROPY``'s value and gradient in one pass. Z2 must be column-major (B, k).
    log P[i, y_i] = Z2[i, y_i] - log sum_j exp(Z2[i, j]) after each row is shifted by its max
    (softmax unchanged, exp cannot overflow).
    """
    B = Z2.shape[0]
    Z2 -= np.max(Z2, axis=1, keepdims=True, out=buf.row_max)  # shift each row by its max
    cells = Z2.reshape(-1, order="F")  # a view: entry (i, j) is cells[i + B j]
    np.multiply(y, B, out=buf.flat_index)
    buf.flat_index += buf.rows  # i + B y_i
    np.take(cells, buf.flat_index, out=buf.true_score, mode="clip")  # Z2[i, y_i] (the put below checks)
    np.exp(Z2, out=Z2)  # exp(Z2)                                                              (B, k)
    np.sum(Z2, axis=1, keepdims=True, out=buf.row_sum)  # sum_j exp(Z2[i, j])                  (B, 1)
    np.log(buf.row_sum, out=buf.log_row_sum)
    loss = float(buf.log_row_sum.sum() - buf.true_score.sum()) / B  # J
    Z2 /= buf.row_sum  # P = softmax(Z2)                                                       (B, k)
    # P - Y: 1 off the true class of each row, through the (B,) buffer the loss no longer needs
    # (np.subtract.at computes the same and took 45 us at B = 1000, this 4 us)
    np.take(cells, buf.flat_index, out=buf.true_score, mode="clip")  # P[i, y_i] (a raising take copies)
    buf.true_score -= 1.0
    np.put(cells, buf.flat_index, buf.true_score)  # an index out of range raises
    Z2 /= B  # (P - Y) / B: the loss is a mean over the batch                                  (B, k)
    return loss


def shifted_cross_entropy_sum(Z2: np.ndarray, y: np.ndarray, E: np.ndarray, rows: np.ndarray) -> float:
    """sum_i -log P[i, y_i] for scores Z2 (n, k) already shifted so that each row's max is 0
    (``CROSS_ENTROPY``'s losses, summed in float64); E (n, k) is scratch, rows = 0, 1, ..., n - 1."""
    np.exp(Z2, out=E)  # exp(Z2), at most 1                                                    (n, k)
    # -log P[i, y_i] = log sum_j exp(Z2[i, j]) - Z2[i, y_i]   (after the shift)
    losses = np.log(E.sum(axis=1)) - Z2[rows, y]
    return float(losses.sum(dtype=np.float64))
