"""Optimisers and learning-rate schedules: how a gradient becomes a parameter update.

Parameters and gradients are dicts of arrays keyed ``W1`` (784, h), ``b1`` (h,), ``W2`` (h, k),
``b2`` (k,). An optimiser is built once for a given set of parameters; each ``step`` then
updates those arrays *in place* (the training loop holds references to them), never writes to
the gradients, keeps the arrays' float dtype, and allocates nothing: its state and one scratch
buffer per parameter are allocated at construction, and every operation writes through
``out=`` or an in-place operator. Hyperparameters are held as Python floats, which (numpy 2,
NEP 50) combine with a float32 array without promoting it to float64.

Below, p is a parameter, g its gradient dJ/dp for the current mini-batch, and eta the learning
rate handed to ``step`` (normally a schedule's value for the current step).

sgd
    Plain mini-batch gradient descent (CS229): step against the gradient,
    ``p <- p - eta g``.

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
    scaling. ``weight_decay`` (lambda) is ignored by every other optimiser; an L2 penalty on
    the loss belongs to the model's gradients, not here.

Schedules map a 0-based global step to a learning rate: ``constant``; ``step`` (multiply by
gamma every ``step_size`` epochs); ``cosine`` (half a cosine from base_lr down to min_lr);
``plateau`` (multiply by a factor whenever dev accuracy has stopped rising for a number of
epochs: the one schedule that depends on the run, see ``PlateauSchedule``). Any of them may
begin with a linear warmup, see ``make_schedule``.

``state_dict`` / ``load_state_dict`` save and restore the optimiser's state (velocities,
moments, step count) as a flat dict of arrays, so that a resumed run continues bit-identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mlp_cli.errors import CheckpointError, ConfigError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "plateau")

Params = dict[str, np.ndarray]
Schedule = Callable[[int], float]

# One table for the optimiser hyperparameters: name -> (is it valid?, the valid range in words).
_HYPERPARAMETER_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "momentum": (lambda x: 0.0 <= x < 1.0, "in [0, 1)"),
    "beta1": (lambda x: 0.0 <= x < 1.0, "in [0, 1)"),
    "beta2": (lambda x: 0.0 <= x < 1.0, "in [0, 1)"),
    "eps": (lambda x: x > 0.0, "> 0"),
    "weight_decay": (lambda x: x >= 0.0, ">= 0"),
}


def _unknown_choice(kind: str, name: str, choices: tuple[str, ...]) -> ConfigError:
    return ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}")


def _check_hyperparameter(name: str, value: float) -> float:
    """Return ``value`` as a Python float, or raise ConfigError if it is outside its range."""
    is_valid, valid_range = _HYPERPARAMETER_RULES[name]
    value = float(value)
    if not (math.isfinite(value) and is_valid(value)):
        raise ConfigError(f"{name} must be {valid_range}, got {value!r}")
    return value


class Optimizer:
    """Base class: owns the state arrays and their (de)serialisation; subclasses own ``step``.

    ``self._state`` maps flat names (``"velocity.W1"``, ``"m.W1"``, ``"t"``) to the live state
    arrays; ``self._scratch`` holds one buffer per parameter, same shape and dtype, reused by
    every step.
    """

    name: str

    def __init__(self, params: Params) -> None:
        if not params:
            raise ValueError("an optimiser needs at least one parameter array")
        for key, p in params.items():
            if not (isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.floating)):
                raise TypeError(f"parameter {key!r} must be a float ndarray, got {p!r:.80}")
        self._keys = tuple(params)
        self._scratch: Params = {key: np.empty_like(p) for key, p in params.items()}
        self._state: dict[str, np.ndarray] = {}

    def step(self, params: Params, grads: Params, lr: float) -> None:
        """Update every array in ``params`` in place from ``grads`` (left untouched)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the state, flat: ``"velocity.W1"``, ``"m.W1"``, ``"v.W1"``, ``"t"`` (0-d
        int64). Empty for sgd, which has none."""
        return {name: array.copy() for name, array in self._state.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
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

    def step(self, params: Params, grads: Params, lr: float) -> None:
        lr = float(lr)
        for key in self._keys:
            p, g, s = params[key], grads[key], self._scratch[key]
            np.multiply(g, lr, out=s)  # s = eta g
            p -= s  # p <- p - eta g


class Momentum(Optimizer):
    """Classical momentum, or Nesterov's variant with ``nesterov=True`` (PyTorch's forms)."""

    def __init__(self, params: Params, *, momentum: float, nesterov: bool) -> None:
        super().__init__(params)
        self.name = "nesterov" if nesterov else "momentum"
        self.momentum = _check_hyperparameter("momentum", momentum)
        self.nesterov = nesterov
        self._velocity = {key: np.zeros_like(p) for key, p in params.items()}
        self._state = {f"velocity.{key}": v for key, v in self._velocity.items()}

    def step(self, params: Params, grads: Params, lr: float) -> None:
        lr, mu = float(lr), self.momentum
        for key in self._keys:
            p, g, v, s = params[key], grads[key], self._velocity[key], self._scratch[key]
            v *= mu  # v <- mu v ...
            v += g  # ... + g
            if self.nesterov:
                np.multiply(v, mu, out=s)  # s = mu v
                s += g  # s = g + mu v
                s *= lr  # s = eta (g + mu v)
            else:
                np.multiply(v, lr, out=s)  # s = eta v
            p -= s  # p <- p - s


class Adam(Optimizer):
    """Bias-corrected Adam; with ``decoupled=True`` AdamW (weight decay on ``W*`` keys only)."""

    def __init__(
        self,
        params: Params,
        *,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        decoupled: bool,
    ) -> None:
        super().__init__(params)
        self.name = "adamw" if decoupled else "adam"
        self.beta1 = _check_hyperparameter("beta1", beta1)
        self.beta2 = _check_hyperparameter("beta2", beta2)
        self.eps = _check_hyperparameter("eps", eps)
        # adam ignores weight_decay: only the decoupled form decays here.
        self.weight_decay = (
            _check_hyperparameter("weight_decay", weight_decay) if decoupled else 0.0
        )
        self._decayed = tuple(key for key in self._keys if key.startswith("W"))
        self._m = {key: np.zeros_like(p) for key, p in params.items()}
        self._v = {key: np.zeros_like(p) for key, p in params.items()}
        self._t = np.zeros((), dtype=np.int64)  # steps taken; 0-d so it lives in _state too
        self._state = {
            **{f"m.{key}": m for key, m in self._m.items()},
            **{f"v.{key}": v for key, v in self._v.items()},
            "t": self._t,
        }

    def step(self, params: Params, grads: Params, lr: float) -> None:
        lr, beta1, beta2 = float(lr), self.beta1, self.beta2
        self._t += 1
        t = int(self._t)
        # eta m_hat / (sqrt(v_hat) + eps) = alpha_t m / (sqrt(v) + eps c), c = sqrt(1 - beta2^t)
        c = math.sqrt(1.0 - beta2**t)
        alpha_t = lr * c / (1.0 - beta1**t)  # alpha_t = eta c / (1 - beta1^t)
        eps_hat = self.eps * c  # eps c
        if self.weight_decay:
            shrink = 1.0 - lr * self.weight_decay
            for key in self._decayed:
                p = params[key]
                p *= shrink  # p <- p - eta lambda p   (weights only, never biases)
        for key in self._keys:
            p, g, s = params[key], grads[key], self._scratch[key]
            m, v = self._m[key], self._v[key]
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

    def _check_loaded(self, name: str, array: np.ndarray) -> None:
        super()._check_loaded(name, array)
        if name == "t" and int(array) < 0:
            raise CheckpointError(f"optimiser step count t must be >= 0, got {int(array)}")
        if name.startswith("v.") and (array < 0).any():
            raise CheckpointError(f"optimiser state {name!r} (mean squared gradient) is negative")


def make_optimizer(
    name: str,
    params: Params,
    *,
    momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Build the optimiser ``name`` (one of OPTIMIZERS) for ``params``, allocating its state.

    Hyperparameters an optimiser does not use are ignored; those it uses are range-checked
    (ConfigError). ``params`` fixes the keys, shapes and dtypes every later ``step`` expects.
    """
    if name == "sgd":
        return SGD(params)
    if name in ("momentum", "nesterov"):
        return Momentum(params, momentum=momentum, nesterov=name == "nesterov")
    if name in ("adam", "adamw"):
        return Adam(
            params, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            decoupled=name == "adamw",
        )
    raise _unknown_choice("optimizer", name, OPTIMIZERS)


def make_schedule(
    name: str,
    base_lr: float,
    *,
    total_steps: int,
    steps_per_epoch: int,
    step_size: int = 10,
    gamma: float = 0.1,
    min_lr: float = 0.0,
    warmup_epochs: int = 0,
    plateau_patience: int = 5,
    plateau_factor: float = 0.5,
    plateau_min_delta: float = 0.0,
) -> Schedule:
    """Return ``lr(step)``, the learning rate for a 0-based global step, as a Python float.

    - ``constant``: base_lr.
    - ``step``: ``base_lr * gamma ** (step // (step_size * steps_per_epoch))``, i.e. multiplied
      by gamma every ``step_size`` epochs, counted from the start of the run.
    - ``cosine``: ``min_lr + (base_lr - min_lr) (1 + cos(pi * progress)) / 2`` with progress
      going from 0 at the end of warmup to 1 at ``total_steps`` (so the final update of a run
      of total_steps steps uses a rate just above min_lr); min_lr after that.
    - ``plateau``: a :class:`PlateauSchedule`, base_lr until dev accuracy stalls; the training
      loop reports each epoch's dev accuracy to its ``update``.

    With ``warmup_epochs`` = E > 0 the first W = E * steps_per_epoch steps instead ramp linearly,
    ``base_lr * (step + 1) / W``, reaching base_lr on step W - 1 (no step is wasted at 0).
    Invalid names or ranges raise ConfigError.
    """
    base_lr, gamma, min_lr = float(base_lr), float(gamma), float(min_lr)
    if name not in SCHEDULES:
        raise _unknown_choice("schedule", name, SCHEDULES)
    checks = (
        ("base_lr", base_lr, math.isfinite(base_lr) and base_lr > 0, "> 0"),
        ("total_steps", total_steps, total_steps >= 1, ">= 1"),
        ("steps_per_epoch", steps_per_epoch, steps_per_epoch >= 1, ">= 1"),
        ("step_size", step_size, step_size >= 1, ">= 1 epoch"),
        ("gamma", gamma, 0 < gamma <= 1, "in (0, 1]"),
        ("min_lr", min_lr, 0 <= min_lr <= base_lr, f"in [0, base_lr={base_lr}]"),
        ("warmup_epochs", warmup_epochs, warmup_epochs >= 0, ">= 0"),
        ("plateau_patience", plateau_patience, plateau_patience >= 1, ">= 1 epoch"),
        ("plateau_factor", plateau_factor, 0 < plateau_factor < 1, "in (0, 1)"),
        ("plateau_min_delta", plateau_min_delta, 0 <= plateau_min_delta <= 1, "in [0, 1]"),
    )
    for key, value, ok, valid_range in checks:
        if not ok:
            raise ConfigError(f"{key} must be {valid_range}, got {value!r}")
    warmup_steps = warmup_epochs * steps_per_epoch
    if warmup_steps >= total_steps:
        raise ConfigError(
            f"warmup_epochs ({warmup_epochs}, {warmup_steps} steps) must be shorter than the run "
            f"({total_steps} steps)"
        )
    if name == "plateau":
        return PlateauSchedule(
            base_lr, patience=plateau_patience, factor=float(plateau_factor),
            min_delta=float(plateau_min_delta), min_lr=min_lr, warmup_epochs=warmup_epochs,
            steps_per_epoch=steps_per_epoch,
        )
    steps_per_decay = step_size * steps_per_epoch
    decay_steps = total_steps - warmup_steps

    def decayed(step: int) -> float:
        if name == "step":
            return base_lr * gamma ** (step // steps_per_decay)
        if name == "cosine":
            progress = min(1.0, (step - warmup_steps) / decay_steps)
            return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return base_lr

    def schedule(step: int) -> float:
        if step < 0:
            raise ValueError(f"a schedule's step is 0-based, got {step}")
        if step < warmup_steps:
            return base_lr * (step + 1) / warmup_steps
        return decayed(step)

    return schedule


class PlateauSchedule:
    """Reduce the learning rate on a plateau of dev accuracy (PyTorch's ReduceLROnPlateau, mode
    "max", absolute threshold).

    ``schedule(step)`` is the rate for a 0-based global step, like every schedule: the linear
    warmup for the first ``warmup_epochs`` epochs, then ``base_lr * factor ** reductions``,
    never below ``min_lr``. The training loop calls ``update(epoch, dev_accuracy)`` after each
    epoch's evaluation: an accuracy above ``best + min_delta`` is an improvement and becomes the
    new best; after ``patience`` epochs in a row without one, the rate is multiplied by
    ``factor`` (from the next step on) and the count starts again. Epochs inside the warmup
    record their accuracy but never count against the patience.

    The state (``state_dict``: best accuracy, epochs without improvement, reductions so far) is
    three JSON numbers for the checkpoint's metadata; the rate is recomputed from the count of
    reductions, so a resumed run uses bit-identical rates.
    """

    name = "plateau"

    def __init__(
        self,
        base_lr: float,
        *,
        patience: int,
        factor: float,
        min_delta: float = 0.0,
        min_lr: float = 0.0,
        warmup_epochs: int = 0,
        steps_per_epoch: int = 1,
    ) -> None:
        self.base_lr, self.factor, self.min_delta, self.min_lr = base_lr, factor, min_delta, min_lr
        self.patience, self.warmup_epochs = patience, warmup_epochs
        self._warmup_steps = warmup_epochs * steps_per_epoch
        self.best: float | None = None  # best dev accuracy so far
        self.bad_epochs = 0  # epochs since the last improvement (or reduction)
        self.reductions = 0

    @property
    def lr(self) -> float:
        """The rate after warmup, as of now."""
        return max(self.min_lr, self.base_lr * self.factor**self.reductions)

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"a schedule's step is 0-based, got {step}")
        if step < self._warmup_steps:
            return self.base_lr * (step + 1) / self._warmup_steps
        return self.lr

    def update(self, epoch: int, dev_accuracy: float) -> bool:
        """Record the dev accuracy after ``epoch`` (1-based); True when the rate was reduced."""
        dev_accuracy = float(dev_accuracy)
        if self.best is None or dev_accuracy > self.best + self.min_delta:
            self.best, self.bad_epochs = dev_accuracy, 0
            return False
        if epoch <= self.warmup_epochs:
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience or self.lr <= self.min_lr:
            return False
        self.reductions += 1
        self.bad_epochs = 0
        return True

    def state_dict(self) -> dict[str, float | int | None]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "reductions": self.reductions}

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        """Restore ``state_dict``'s values; CheckpointError if they are malformed (then nothing
        changes)."""
        if not isinstance(state, dict) or set(state) != set(self.state_dict()):
            raise CheckpointError(f"plateau schedule state is malformed: {state!r}")
        best, bad_epochs, reductions = state["best"], state["bad_epochs"], state["reductions"]
        counts_ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (bad_epochs, reductions))
        best_ok = best is None or (
            isinstance(best, (int, float)) and not isinstance(best, bool) and math.isfinite(best)
        )
        if not (counts_ok and best_ok):
            raise CheckpointError(f"plateau schedule state is invalid: {state!r}")
        self.best = None if best is None else float(best)
        self.bad_epochs, self.reductions = int(bad_epochs), int(reductions)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<PlateauSchedule lr={self.lr:g} after {self.reductions} reductions, best={self.best}>"
