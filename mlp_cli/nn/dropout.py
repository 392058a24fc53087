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
rates 0 there are no masks and the step is the README's equations.

The tuned step keeps a mask as booleans (kept or not) and its scale 1 / (1 - p): M = keep * scale.
``draw_masks`` draws them with numpy's generator (the reference); ``draw_masks_at`` the same bits
in one compiled call where numba is installed (``nn.compiled_random``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlp_cli.nn import fused
from mlp_cli.nn.network import Params, sigmoid
from mlp_cli.nn.workspace import Layout, Workspace, buffer, layout

DROPOUT_STREAM = 0x64726f70  # "drop": keeps training's dropout masks apart from its other random streams


LEVELS = 1 << 16  # a unit's draw is a uniform 16-bit integer: the rate is resolved to 1/65,536


@dataclass
class Masks:
    """The kept units of one batch (True: kept) and the scale 1 / P(kept) of each layer; None
    where that layer is not thinned. ``M0`` and ``M1`` are the masks of the derivation."""

    inputs: np.ndarray | None = None  # (B, d) bool
    hidden: np.ndarray | None = None  # (B, h) bool
    input_scale: float = 1.0
    hidden_scale: float = 1.0

    @property
    def M0(self) -> np.ndarray | None:
        return None if self.inputs is None else self.inputs * self.input_scale

    @property
    def M1(self) -> np.ndarray | None:
        return None if self.hidden is None else self.hidden * self.hidden_scale


NO_MASKS = Masks()  # nothing thinned


@dataclass
class InputMaskBuffers:
    """Input dropout's arrays for a batch of B rows: which pixels are kept, the thinned inputs."""

    keep: np.ndarray = buffer("B", "d", kind="mask")
    X: np.ndarray = buffer("B", "d")  # X~ = X * M0


@dataclass
class HiddenMaskBuffers:
    """Hidden dropout's arrays for a batch of B rows: which units are kept, the thinned activations."""

    keep: np.ndarray = buffer("B", "h", kind="mask")
    A1: np.ndarray = buffer("B", "h")  # A1~ = A1 * M1


def dropout_layout(batch_size: int, inputs: int, hidden: int, input_rate: float, hidden_rate: float) -> list[Layout]:
    """The arrays ``draw_masks`` and the step keep for these rates (for ``mlp info``)."""
    sizes = {"B": batch_size, "d": inputs, "h": hidden}
    return ((layout(InputMaskBuffers, sizes) if input_rate > 0 else [])
            + (layout(HiddenMaskBuffers, sizes) if hidden_rate > 0 else []))


def draw_mask(rng: np.random.Generator, rate: float, keep: np.ndarray) -> float:
    """keep <- True with probability 1 - rate (to 1/65,536); returns the scale 1 / P(kept).

    Each entry compares a 16-bit slice of the generator's raw 64-bit output with the threshold:
    four entries per draw, several times cheaper than a float per entry (the cost of dropout is
    mostly this draw). The scale is that of the rounded rate, so E[M] = 1 exactly.
    """
    threshold, scale = resolved(rate)
    raw = rng.bit_generator.random_raw(-(-keep.size // 4))  # ceil(n / 4) 64-bit draws
    draws = raw.view(np.uint16)[: keep.size].reshape(keep.shape)
    np.greater_equal(draws, threshold, out=keep)
    return scale


def resolved(rate: float) -> tuple[int, float]:
    """(threshold, scale) of a rate: a 16-bit draw below the threshold drops the unit; the scale is
    1 / P(kept) of the rounded rate, so E[M] = 1 exactly."""
    threshold = round(rate * LEVELS)
    return threshold, LEVELS / (LEVELS - threshold)


def draw_masks(
    rng: np.random.Generator, batch_size: int, inputs: int, hidden: int,
    input_rate: float, hidden_rate: float, dtype: np.dtype, workspace: Workspace,
) -> Masks:
    """This batch's masks, in ``workspace`` (overwritten by the next call); inputs' first."""
    sizes = {"B": batch_size, "d": inputs, "h": hidden}
    masks = Masks()
    if input_rate > 0:
        masks.inputs = workspace.get(InputMaskBuffers, sizes, dtype).keep
        masks.input_scale = draw_mask(rng, input_rate, masks.inputs)
    if hidden_rate > 0:
        masks.hidden = workspace.get(HiddenMaskBuffers, sizes, dtype).keep
        masks.hidden_scale = draw_mask(rng, hidden_rate, masks.hidden)
    return masks


def draw_masks_at(
    key: list[int], batch_size: int, inputs: int, hidden: int,
    input_rate: float, hidden_rate: float, dtype: np.dtype, workspace: Workspace, fast: fused.Kernels | None,
) -> Masks:
    """``draw_masks(np.random.default_rng(key), ...)``: with ``fast`` (``fused.kernels()``) in one
    compiled call, numpy's SeedSequence and PCG64 ported bit for bit (``nn.compiled_random``;
    38 against 14 us at batch 50), else through numpy itself."""
    if fast is None:
        return draw_masks(np.random.default_rng(key), batch_size, inputs, hidden, input_rate, hidden_rate, dtype,
                          workspace)
    sizes = {"B": batch_size, "d": inputs, "h": hidden}
    masks, thresholds, keeps = Masks(), [0, 0], [_NO_DRAWS, _NO_DRAWS]  # no mask: no draws
    if input_rate > 0:
        masks.inputs = keeps[0] = workspace.get(InputMaskBuffers, sizes, dtype).keep
        thresholds[0], masks.input_scale = resolved(input_rate)
    if hidden_rate > 0:
        masks.hidden = keeps[1] = workspace.get(HiddenMaskBuffers, sizes, dtype).keep
        thresholds[1], masks.hidden_scale = resolved(hidden_rate)
    fast.draw_keep(entropy_words(key), keeps[0].reshape(-1), thresholds[0], keeps[1].reshape(-1), thresholds[1])
    return masks


_NO_DRAWS = np.zeros(0, dtype=np.bool_)


def entropy_words(values: list[int]) -> np.ndarray:
    """The uint32 words numpy's SeedSequence makes of ``values`` (``_coerce_to_uint32_array``):
    each non-negative int as its 32-bit words, least significant first (0: one word 0), in order."""
    words = []
    for value in values:
        if value < 0:
            raise ValueError("expected non-negative integer")
        words.append(value & 0xFFFFFFFF)
        value >>= 32
        while value:
            words.append(value & 0xFFFFFFFF)
            value >>= 32
    return np.array(words, dtype=np.uint32)


def thinned_logits(params: Params, X: np.ndarray, masks: Masks) -> np.ndarray:
    """Z2 (B, k) of the thinned network, plainly (the gradient check's objective)."""
    X_thin = X if masks.inputs is None else X * masks.M0  # X~ = X * M0
    A1 = sigmoid(X_thin @ params.W1 + params.b1)  # A1 = sigmoid(X~ W1 + b1)
    A1_thin = A1 if masks.hidden is None else A1 * masks.M1  # A1~ = A1 * M1
    return A1_thin @ params.W2 + params.b2  # Z2 = A1~ W2 + b2
