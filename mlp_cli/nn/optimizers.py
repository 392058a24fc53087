"""Optimisers: how a gradient becomes a parameter update.

Parameters and gradients are dicts of arrays keyed ``W1`` (784, h), ``b1`` (h,), ``W2`` (h, k),
``b2`` (k,) (``Params.as_dict()``). An optimiser is built once for a given set of parameters by
``make_optimizer``, which looks its name up in ``mlp_cli.nn.registry.OPTIMIZERS``; each ``step``
then updates those arrays *in place* (the training loop holds references to them), never writes
to the gradients, keeps the arrays' float dtype, and allocates nothing: its state and one scratch
buffer per parameter are allocated at construction, and every operation writes through ``out=``
or an in-place operator. Hyperparameters are Python floats, which (numpy 2, NEP 50) combine with a
float32 array without promoting it. Their ranges are the config's to check; nothing here repeats it.

Below, p is a parameter, g its gradient dJ/dp for the current mini-batch, and eta the learning
rate handed to ``step`` (normally a schedule's value for the current step).

sgd
    Plain mini-batch gradient descent (CS229): ``p <- p - eta g``.

momentum
    Classical ("heavy ball") momentum in PyTorch's form. A velocity v accumulates an
    exponentially decaying sum of past gradients, ``v <- mu v + g``, and the step follows it,
    ``p <- p - eta v``. With a constant gradient v approaches g / (1 - mu), so the effective
    step is 1 / (1 - mu) times larger than sgd's (10x for mu = 0.9); mu = 0 is sgd exactly.

nesterov
    Nesterov's accelerated gradient in the same form: the velocity update is unchanged,
    ``v <- mu v + g``, but the step looks ahead along it, ``p <- p - eta (g + mu v)``,
    which damps the overshoot of classical momentum.

adam
    Adam (Kingma and Ba, 2015) keeps exponential moving averages of the gradient and of its
    elementwise square, ``m <- beta1 m + (1 - beta1) g`` and ``v <- beta2 v + (1 - beta2) g^2``.
    Both start at zero, so after t steps they are biased towards zero by the factors
    ``1 - beta1^t`` and ``1 - beta2^t``; dividing those out gives ``m_hat = m / (1 - beta1^t)``
    and ``v_hat = v / (1 - beta2^t)``, and the step is ``p <- p - eta m_hat / (sqrt(v_hat) + eps)``:
    each coordinate moves by about eta whatever the gradient's scale. The code computes the
    same quantity with one pass fewer: multiplying numerator and denominator by
    ``c = sqrt(1 - beta2^t)`` gives ``alpha_t m / (sqrt(v) + eps c)`` with
    ``alpha_t = eta c / (1 - beta1^t)``, two scalars per step.

adamw
    Adam with decoupled weight decay (Loshchilov and Hutter, 2019): before the Adam step each
    weight matrix (keys starting with ``W``) shrinks towards zero, ``p <- p - eta lambda p``,
    computed as ``p <- (1 - eta lambda) p`` (PyTorch's order and form). Biases are not decayed.
    Unlike an L2 term in the loss, the decay does not pass through Adam's per-coordinate
    scaling; an L2 penalty on the loss belongs to the model's gradients, not here.

The L2 term: ``step(..., penalty=c)`` with c = 2 lambda adds the gradient of lambda |W|^2, c W,
to each weight matrix's gradient (``W1``, ``W2``; never a bias) before the update, so that the
compiled kernels do penalty, momentum and step in one pass (``nn.fused``); the numpy form computes
``g + c W`` into a buffer of its own (``penalised_rows``), the same two roundings.

``state_dict`` / ``load_state_dict`` save and restore the optimiser's state (velocities,
moments, step count) as a flat dict of arrays, so that a resumed run continues bit-identically.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from mlp_cli.errors import CheckpointError, ConfigError
from mlp_cli.nn import fused
from mlp_cli.nn.parallel import for_row_blocks, rows_cols
from mlp_cli.nn.registry import OPTIMIZERS

NamedArrays = dict[str, np.ndarray]  # parameter (or gradient) name -> array


# --------------------------------------------------------------------------------------------
# The updates in numpy, over a block of rows: the reference forms. ``step`` runs them on row
# blocks of each array (``nn.parallel``: elementwise, so the split changes no bit), or runs the
# compiled one-pass kernels of ``nn.fused``, which a test holds bit-identical to these.


def penalised_rows(p: np.ndarray, g: np.ndarray, c: float, out: np.ndarray, rows: slice) -> None:
    """out <- g + c p over ``rows``: the gradient with the L2 term's, c = 2 lambda."""
    out = out[rows]
    np.multiply(p[rows], c, out=out)  # c p
    out += g[rows]  # g + c p


def sgd_rows(p: np.ndarray, g: np.ndarray, s: np.ndarray, lr: float, rows: slice) -> None:
    """p <- p - eta g over ``rows``; s is scratch."""
    p, g, s = p[rows], g[rows], s[rows]
    np.multiply(g, lr, out=s)  # s = eta g
    p -= s  # p <- p - eta g


def momentum_rows(
    p: np.ndarray, g: np.ndarray, v: np.ndarray, s: np.ndarray, mu: float, lr: float, nesterov: bool, rows: slice
) -> None:
    """v <- mu v + g, then p <- p - eta v (or p - eta (g + mu v), Nesterov) over ``rows``."""
    p, g, v, s = p[rows], g[rows], v[rows], s[rows]
    v *= mu  # v <- mu v ...
    v += g  # ... + g
    if nesterov:
        np.multiply(v, mu, out=s)  # s = mu v
        s += g  # s = g + mu v
        s *= lr  # s = eta (g + mu v)
    else:
        np.multiply(v, lr, out=s)  # s = eta v
    p -= s  # p <- p - s


def adam_rows(
    p: np.ndarray, g: np.ndarray, s: np.ndarray, m: np.ndarray, v: np.ndarray,
    scalars: tuple[float, float, float, float], rows: slice,
) -> None:
    """Adam's moments and step over ``rows``; scalars = (beta1, beta2, eps c, alpha_t) (see ``Adam``)."""
    beta1, beta2, eps_hat, alpha_t = scalars
    p, g, s, m, v = p[rows], g[rows], s[rows], m[rows], v[rows]
    m *= beta1  # m <- beta1 m ...
    np.multiply(g, 1.0 - beta1, out=s)
    m += s  # ... + (1 - beta1) g
    v *= beta2  # v <- beta2 v ...
    np.multiply(g, g, out=s)
    s *= 1.0 - beta2
    v += s  # ... + (1 - beta2) g^2
    np.sqrt(v, out=s)
    s += eps_hat  # s = sqrt(v) + eps c
    np.divide(m, s, out=s)  # s = m / (sqrt(v) + eps c)
    s *= alpha_t  # s = alpha_t m / (sqrt(v) + eps c) = eta m_hat / (sqrt(v_hat) + eps)
    p -= s  # p <- p - s


@dataclass(frozen=True, eq=False)
class Flat:
    """One parameter's arrays as the compiled kernels take them: flat views, scalars of their dtype."""

    arrays: tuple[np.ndarray, ...]  # p, g, then the optimiser's state for p
    cast: type  # the arrays' float type: a Python float becomes a scalar of it
    c: np.floating  # the L2 term's c = 2 lambda (0 for a bias)
    decay: bool  # whether the kernel adds c p to g first

    @classmethod
    def of(cls, arrays: tuple[np.ndarray, ...], c: float) -> Flat | None:
        """None where an array does not fit the kernels (``fused.fits``)."""
        if not fused.fits(*arrays):
            return None
        cast = arrays[0].dtype.type
        return cls(tuple(a.reshape(-1) for a in arrays), cast, cast(c), c != 0.0)


class Optimizer:
    """Base class: owns the state arrays and their (de)serialisation; subclasses own ``step``.

    ``self._state`` maps flat names (``"velocity.W1"``, ``"m.W1"``, ``"t"``) to the live state
    arrays; ``self._scratch`` holds one buffer per parameter, same shape and dtype, reused by every step.
    """

    name: str

    def __init__(self, params: NamedArrays) -> None:
        if not params:
            raise ValueError("an optimiser needs at least one parameter array")
        for key, p in params.items():
            if not (isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.floating)):
                raise TypeError(f"parameter {key!r} must be a float ndarray, got {p!r:.80}")
        self._keys = tuple(params)
        self._weights = tuple(key for key in self._keys if key.startswith("W"))  # what L2 and decay touch
        self._scratch: NamedArrays = {key: np.empty_like(p) for key, p in params.items()}
        self._penalised: NamedArrays = {}  # g + c W for the numpy forms, allocated at the first penalty
        self._state: NamedArrays = {}
        self._flat: tuple[float, list[np.ndarray], list[Flat] | None] | None = None

    def step(self, params: NamedArrays, grads: NamedArrays, lr: float, penalty: float = 0.0) -> None:
        """Update every array in ``params`` in place from ``grads`` (left untouched); ``penalty``
        c > 0 adds the L2 term's gradient c W to each weight matrix's gradient first."""
        raise NotImplementedError

    def _gradient(self, key: str, p: np.ndarray, g: np.ndarray, penalty: float) -> np.ndarray:
        """The gradient the numpy form reads: g, or for a weight matrix with ``penalty`` c > 0,
        ``g + c p`` in a buffer of its own (the compiled kernels add c p inside their loop)."""
        c = self._penalty(key, penalty)
        if c == 0.0:
            return g
        out = self._penalised.get(key)
        if out is None:
            out = self._penalised[key] = np.empty_like(p)
        for_row_blocks(partial(penalised_rows, p, g, c, out), *rows_cols(p))
        return out

    def _compiled(self, params: NamedArrays, grads: NamedArrays, penalty: float, *states: NamedArrays) -> tuple[
            fused.Kernels, list[Flat]] | None:
        """The kernels and each key's arrays as they take them (p, g, then ``states``' arrays, flat,
        with the L2 term's scalars), or None where numba is absent or an array does not fit them.

        Built once and kept while the same parameter and gradient arrays come (all steps but a smaller
        last batch's; the state arrays are this optimiser's own, never rebound): an identity check."""
        fast = fused.kernels()
        if fast is None:
            return None
        current = [params[key] for key in self._keys] + [grads[key] for key in self._keys]
        cached = self._flat
        if cached is None or cached[0] != penalty or not all(map(operator.is_, current, cached[1])):
            arrays = tuple((params[key], grads[key], *(s[key] for s in states)) for key in self._keys)
            cached = self._flat = (penalty, current, self._flats(arrays, penalty))
        return None if cached[2] is None else (fast, cached[2])

    def _flats(self, arrays: tuple[tuple[np.ndarray, ...], ...], penalty: float) -> list[Flat] | None:
        """Each key's ``Flat``, or None as soon as one key's arrays do not fit the kernels."""
        flats = []
        for key, row in zip(self._keys, arrays, strict=True):
            flat = Flat.of(row, self._penalty(key, penalty))
            if flat is None:
                return None
            flats.append(flat)
        return flats

    def _penalty(self, key: str, penalty: float) -> float:
        """The L2 term's c for ``key``: ``penalty`` for a weight matrix, 0 for a bias."""
        return penalty if key in self._weights else 0.0

    def arrays(self) -> NamedArrays:
        """Every array the optimiser allocated, state and scratch (for accounting)."""
        return {**self._state, **{f"scratch.{key}": s for key, s in self._scratch.items()},
                **{f"penalised.{key}": s for key, s in self._penalised.items()}}

    def state_dict(self) -> NamedArrays:
        """A copy of the state, flat: ``"velocity.W1"``, ``"m.W1"``, ``"v.W1"``, ``"t"`` (0-d
        int64). Empty for sgd, which has none."""
        return {name: array.copy() for name, array in self._state.items()}

    def load_state_dict(self, state: NamedArrays) -> None:
        """Copy ``state`` into this optimiser's arrays after checking that it fits exactly.

        Raises CheckpointError naming the first key that is missing, unexpected, of the wrong
        shape or dtype, or holds a value this optimiser could not have produced.
        """
        missing = sorted(set(self._state) - set(state))
        unexpected = sorted(set(state) - set(self._state))
        if missing or unexpected:
            raise CheckpointError(
                f"{self.name} optimiser state does not match: missing {missing}, "
                f"unexpected {unexpected}"
            )
        checked = {}
        for name, own in self._state.items():
            loaded = np.asarray(state[name])
            if loaded.shape != own.shape or loaded.dtype != own.dtype:
                raise CheckpointError(
                    f"optimiser state {name!r} should be {own.dtype}{list(own.shape)}, "
                    f"got {loaded.dtype}{list(loaded.shape)}"
                )
            self._check_loaded(name, loaded)
            checked[name] = loaded
        for name, own in self._state.items():  # only once everything passed: all or nothing
            np.copyto(own, checked[name])

    def _check_loaded(self, name: str, array: np.ndarray) -> None:
        """Refuse values no run could have produced (extended by subclasses)."""
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise CheckpointError(f"optimiser state {name!r} holds non-finite values")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} over {', '.join(self._keys)}>"


class SGD(Optimizer):
    """``p <- p - eta g``; no state."""

    name = "sgd"

    def step(self, params: NamedArrays, grads: NamedArrays, lr: float, penalty: float = 0.0) -> None:
        lr = float(lr)
        compiled = self._compiled(params, grads, penalty)
        if compiled is not None:
            fast, flats = compiled
            for f in flats:
                fast.sgd(*f.arrays, f.cast(lr), f.c, f.decay)
            return
        for key in self._keys:
            p, s = params[key], self._scratch[key]
            g = self._gradient(key, p, grads[key], penalty)
            for_row_blocks(partial(sgd_rows, p, g, s, lr), *rows_cols(p))


class Momentum(Optimizer):
    """Classical momentum: ``v <- mu v + g``, ``p <- p - eta v`` (PyTorch's form)."""

    name = "momentum"
    nesterov = False

    def __init__(self, params: NamedArrays, *, momentum: float) -> None:
        super().__init__(params)
        self.momentum = momentum
        self._velocity = {key: np.zeros_like(p) for key, p in params.items()}
        self._state = {f"velocity.{key}": v for key, v in self._velocity.items()}

    def step(self, params: NamedArrays, grads: NamedArrays, lr: float, penalty: float = 0.0) -> None:
        lr, mu = float(lr), self.momentum
        compiled = self._compiled(params, grads, penalty, self._velocity)
        if compiled is not None:
            fast, flats = compiled
            for f in flats:
                fast.momentum(*f.arrays, f.cast(mu), f.cast(lr), f.c, f.decay, self.nesterov)
            return
        for key in self._keys:
            p, v, s = params[key], self._velocity[key], self._scratch[key]
            g = self._gradient(key, p, grads[key], penalty)
            for_row_blocks(partial(momentum_rows, p, g, v, s, mu, lr, self.nesterov), *rows_cols(p))


class Nesterov(Momentum):
    """Nesterov's variant: the same velocity, the step ``p <- p - eta (g + mu v)``."""

    name = "nesterov"
    nesterov = True


class Adam(Optimizer):
    """Bias-corrected Adam."""

    name = "adam"

    def __init__(self, params: NamedArrays, *, beta1: float, beta2: float, eps: float) -> None:
        super().__init__(params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay = 0.0  # decoupled decay: AdamW's
        self._m = {key: np.zeros_like(p) for key, p in params.items()}
        self._v = {key: np.zeros_like(p) for key, p in params.items()}
        self._t = np.zeros((), dtype=np.int64)  # steps taken; 0-d so it lives in _state too
        self._state = {
            **{f"m.{key}": m for key, m in self._m.items()},
            **{f"v.{key}": v for key, v in self._v.items()},
            "t": self._t,
        }

    def step(self, params: NamedArrays, grads: NamedArrays, lr: float, penalty: float = 0.0) -> None:
        lr, beta1, beta2 = float(lr), self.beta1, self.beta2
        self._t += 1
        t = int(self._t)
        # eta m_hat / (sqrt(v_hat) + eps) = alpha_t m / (sqrt(v) + eps c), c = sqrt(1 - beta2^t)
        c = math.sqrt(1.0 - beta2**t)
        alpha_t = lr * c / (1.0 - beta1**t)  # alpha_t = eta c / (1 - beta1^t)
        eps_hat = self.eps * c  # eps c
        if self.weight_decay and penalty:  # the L2 term's c W is of the weights before the decay
            grads = {key: self._gradient(key, params[key], grads[key], penalty) for key in self._keys}
            penalty = 0.0
        if self.weight_decay:
            shrink = 1.0 - lr * self.weight_decay
            for key in self._weights:
                p = params[key]
                p *= shrink  # p <- p - eta lambda p   (weights only, never biases)
        compiled = self._compiled(params, grads, penalty, self._m, self._v)
        if compiled is not None:
            fast, flats = compiled
            scalars = (beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps_hat, alpha_t)
            for f in flats:
                fast.adam(*f.arrays, *(f.cast(x) for x in scalars), f.c, f.decay)
            return
        for key in self._keys:
            p, s, m, v = params[key], self._scratch[key], self._m[key], self._v[key]
            g = self._gradient(key, p, grads[key], penalty)
            rows = partial(adam_rows, p, g, s, m, v, (beta1, beta2, eps_hat, alpha_t))
            for_row_blocks(rows, *rows_cols(p))

    def _check_loaded(self, name: str, array: np.ndarray) -> None:
        super()._check_loaded(name, array)
        if name == "t" and int(array) < 0:
            raise CheckpointError(f"optimiser step count t must be >= 0, got {int(array)}")
        if name.startswith("v.") and (array < 0).any():
            raise CheckpointError(f"optimiser state {name!r} (mean squared gradient) is negative")


class AdamW(Adam):
    """Adam with decoupled weight decay on the ``W*`` arrays."""

    name = "adamw"

    def __init__(
        self, params: NamedArrays, *, beta1: float, beta2: float, eps: float, weight_decay: float
    ) -> None:
        super().__init__(params, beta1=beta1, beta2=beta2, eps=eps)
        self.weight_decay = weight_decay


# The classes the registry's entries name (``OptimizerSpec.implementation``): a mapping that mypy
# and a rename can see; a test holds it and the registry in step.
IMPLEMENTATIONS: dict[str, type[Optimizer]] = {cls.__name__: cls for cls in (SGD, Momentum, Nesterov, Adam, AdamW)}


def make_optimizer(settings: Any, params: NamedArrays) -> Optimizer:
    """Build the optimiser ``settings.name`` for ``params``, allocating its state.

    ``settings``: the config's ``optimizer`` section (already validated), or anything with its
    ``name`` and the fields the registry entry lists. ``params`` fixes the keys, shapes and
    dtypes every later ``step`` expects.
    """
    spec = OPTIMIZERS.get(settings.name)
    if spec is None:
        raise ConfigError(f"unknown optimizer {settings.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    cls = IMPLEMENTATIONS[spec.implementation]
    return cls(params, **{field: float(getattr(settings, field)) for field in spec.fields})
