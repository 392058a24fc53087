"""Dropout: a random fraction of the inputs and hidden units left out of each training batch.

Inverted dropout (Srivastava et al., 2014): a kept unit is scaled by 1 / (1 - p), so the next
layer's expected input is unchanged and the trained network is evaluated, saved and used exactly
like one trained without dropout. Training only: evaluation never thins anything. With masks
M0 (B, d) and M1 (B, h) whose entries are 0 (dropped, with probability p) or 1 / (1 - p):

    X~  = X * M0                          the inputs, thinned                 (B, d)
    Z1  = X~ W1 + b1,  A1 = sigmoid(Z1)                                       (B, h)
    A1~ = A1 * M1                         the hidden units, thinned           (B, h)
    Z2  = A1~ W2 + b2,  P = softmax(Z2)                                       (B, k)

and the gradients go back through the same masks (``mlp_cli.nn.backprop.backprop`` writes them
out): dW2 = A1~^T dZ2, dA1 = (dZ2 W2^T) * M1, dZ1 = dA1 * A1 (1 - A1), dW1 = X~^T dZ1. With both
rates 0 there are no masks and the step is the seed's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlp_cli.nn.network import Params, sigmoid
from mlp_cli.nn.workspace import Layout, Workspace, buffer, layout

DROPOUT_STREAM = 0x64726f70  # "drop": keeps training's dropout masks apart from its other random streams


@dataclass
class Masks:
    """The masks of one batch: entries 0 or 1 / (1 - p); None where that layer is not thinned."""

    inputs: np.ndarray | None = None  # M0 (B, d)
    hidden: np.ndarray | None = None  # M1 (B, h)


@dataclass
class InputMaskBuffers:
    """Input dropout's arrays for a batch of B rows: the mask and the thinned inputs."""

    keep: np.ndarray = buffer("B", "d", kind="mask")  # uniform draw >= p
    M0: np.ndarray = buffer("B", "d")  # the uniform draws, then keep / (1 - p)
    X: np.ndarray = buffer("B", "d")  # X~ = X * M0


@dataclass
class HiddenMaskBuffers:
    """Hidden dropout's arrays for a batch of B rows: the mask and the thinned activations."""

    keep: np.ndarray = buffer("B", "h", kind="mask")
    M1: np.ndarray = buffer("B", "h")
    A1: np.ndarray = buffer("B", "h")  # A1~ = A1 * M1


def dropout_layout(batch_size: int, inputs: int, hidden: int, input_rate: float, hidden_rate: float) -> list[Layout]:
    """The arrays ``draw_masks`` and the step keep for these rates (for ``mlp info``)."""
    sizes = {"B": batch_size, "d": inputs, "h": hidden}
    return ((layout(InputMaskBuffers, sizes) if input_rate > 0 else [])
            + (layout(HiddenMaskBuffers, sizes) if hidden_rate > 0 else []))


def draw_mask(rng: np.random.Generator, rate: float, keep: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out <- a mask of out's shape: 0 with probability ``rate``, else 1 / (1 - rate)."""
    rng.random(out=out, dtype=out.dtype)  # U[0, 1)
    np.greater_equal(out, rate, out=keep)  # kept with probability 1 - rate
    return np.multiply(keep, 1.0 / (1.0 - rate), out=out)


def draw_masks(
    rng: np.random.Generator, batch_size: int, inputs: int, hidden: int,
    input_rate: float, hidden_rate: float, dtype: np.dtype, workspace: Workspace,
) -> Masks:
    """This batch's masks, in ``workspace`` (overwritten by the next call); inputs' first."""
    sizes = {"B": batch_size, "d": inputs, "h": hidden}
    masks = Masks()
    if input_rate > 0:
        buf = workspace.get(InputMaskBuffers, sizes, dtype)
        masks.inputs = draw_mask(rng, input_rate, buf.keep, buf.M0)
    if hidden_rate > 0:
        hbuf = workspace.get(HiddenMaskBuffers, sizes, dtype)
        masks.hidden = draw_mask(rng, hidden_rate, hbuf.keep, hbuf.M1)
    return masks


def thinned_logits(params: Params, X: np.ndarray, masks: Masks) -> np.ndarray:
    """Z2 (B, k) of the thinned network, plainly (the gradient check's objective)."""
    X_thin = X if masks.inputs is None else X * masks.inputs  # X~ = X * M0
    A1 = sigmoid(X_thin @ params.W1 + params.b1)  # A1 = sigmoid(X~ W1 + b1)
    A1_thin = A1 if masks.hidden is None else A1 * masks.hidden  # A1~ = A1 * M1
    return A1_thin @ params.W2 + params.b2  # Z2 = A1~ W2 + b2
