"""The two-layer network: its parameters, its functions (each beside its derivative) and the plain
forward pass.

Rows are examples. With X (B, d) a batch of inputs and y (B,) its integer labels:

    Z1 = X @ W1 + b1        (B, h)     hidden pre-activations
    A1 = sigmoid(Z1)        (B, h)     hidden activations
    Z2 = A1 @ W2 + b2       (B, k)     class scores (logits)
    P  = softmax(Z2)        (B, k)     class probabilities, row-wise
    J  = -(1/B) sum_i log P[i, y_i]    mean cross-entropy (the loss unit, ``mlp_cli.nn.loss``)

The gradients of J are derived in ``mlp_cli.nn.backprop``: ``backprop`` there is the README's
equations line by line, ``loss_and_gradients`` the tuned step that training runs.

The L2 penalty lambda (|W1|^2 + |W2|^2) is added to the objective when ``l2 > 0``; biases are not
penalised, and the loss that is *reported* is the cross-entropy alone (what CS229 plots).

Numerics: the softmax subtracts each row's maximum before exponentiating and the loss is computed
as log-sum-exp minus the true class's score (never log of a probability, which can be 0); the
sigmoid uses 0.5 (1 + tanh(z / 2)), which cannot overflow and saturates to exactly 0 or 1 instead
of producing subnormal numbers (on which matrix products run many times slower).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIDE = 28  # MNIST images are 28 x 28 pixels
INPUTS = IMAGE_SIDE * IMAGE_SIDE  # d = 784
CLASSES = 10  # k: the digits 0..9
PARAM_NAMES = ("W1", "b1", "W2", "b2")


@dataclass
class Params:
    """The network's parameters, or arrays of the same shapes (its gradients); attribute or key access."""

    W1: np.ndarray  # (d, h)
    b1: np.ndarray  # (h,)
    W2: np.ndarray  # (h, k)
    b2: np.ndarray  # (k,)

    def __getitem__(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The arrays themselves, not copies: optimisers update them in place (named as PARAM_NAMES)."""
        return {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}  # every step: no fields() walk

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
# The functions, each beside its derivative


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


def softmax(Z: np.ndarray) -> np.ndarray:
    """softmax(z)_j = exp(z_j - max(z)) / sum_l exp(z_l - max(z)), row-wise."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    E /= E.sum(axis=1, keepdims=True)
    return E


def softmax_backward(P: np.ndarray, dP: np.ndarray) -> np.ndarray:
    """dJ/dZ from dJ/dP through P = softmax(Z), row-wise: dP @ (diag(p) - p p^T) = P * (dP - (dP . P))."""
    return P * (dP - (dP * P).sum(axis=1, keepdims=True))


def log_softmax(Z: np.ndarray) -> np.ndarray:
    """log softmax(z)_j = z_j - max(z) - log sum_l exp(z_l - max(z)), row-wise; stable."""
    S = Z - Z.max(axis=1, keepdims=True)
    S -= np.log(np.exp(S).sum(axis=1, keepdims=True))
    return S


def log_softmax_backward(P: np.ndarray, dL: np.ndarray) -> np.ndarray:
    """dJ/dZ from dJ/dL through L = log softmax(Z), with P = softmax(Z): dL - P * sum_j dL_j.

    For the cross-entropy J = -(1/B) sum_i L[i, y_i], dL = -Y / B (Y one-hot), and since each row
    of Y sums to one this is (P - Y) / B: the shortcut the backward pass uses (``nn.loss``). It
    holds only for this pairing (softmax output, cross-entropy loss, labels that sum to one per row).
    """
    return dL - P * dL.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Forward pass (plain: the reference the tuned kernels are tested against)


def logits(params: Params, X: np.ndarray) -> np.ndarray:
    """Class scores Z2 (B, k) for inputs X (B, d)."""
    A1 = sigmoid(X @ params.W1 + params.b1)  # A1 = sigmoid(X @ W1 + b1)   (B, h)
    return A1 @ params.W2 + params.b2  # Z2 = A1 @ W2 + b2   (B, k)


def forward(params: Params, X: np.ndarray) -> np.ndarray:
    """Class probabilities P (B, k) for inputs X (B, d)."""
    return softmax(logits(params, X))


def l2_penalty(params: Params, l2: float) -> float:
    """lambda (||W1||^2 + ||W2||^2); its gradient is 2 lambda W for each weight matrix."""
    return float(l2 * (np.vdot(params.W1, params.W1) + np.vdot(params.W2, params.W2)))
