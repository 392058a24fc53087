"""Checking the hand-derived gradients against central finite differences.

The gradients checked are those training uses, ``mlp_cli.nn.backprop.loss_and_gradients``; the
equations they implement are written out line by line in ``mlp_cli.nn.backprop.backprop``, the
plain reference the tuned step is tested against.

For a parameter entry p the numerical derivative of the objective J_reg is

    dJ/dp ~ (J_reg(p + eps) - J_reg(p - eps)) / (2 eps)

whose error is O(eps^2) (the first-order terms of the two Taylor expansions cancel). J_reg is
computed by an independent path -- ``logits`` and the loss unit plus the L2 penalty, not the
forward half of ``loss_and_gradients`` -- so a slip in the backward pass cannot hide behind the
same slip in its forward pass. Everything runs in float64: with eps = 1e-5 the rounding error of
the difference quotient (about 1e-16 |J| / eps ~ 1e-11) and its truncation error (eps^2 times
the third derivative) are both far below any real mistake: a wrong factor or a missing term gives
a relative error of 1e-3 .. 1, a correct gradient 1e-11 .. 1e-7.

Each parameter is compared on a random sample of its entries (all of them for small ones), by
the norm-wise relative error

    ||g_analytic - g_numeric|| / (||g_analytic|| + ||g_numeric||)

over the sampled entries: 0 for a perfect match, 1 for unrelated (or opposite) vectors, and not
dominated, as an entry-wise ratio would be, by entries whose true gradient is ~0. A parameter
whose sampled gradients are all at the rounding floor (a saturated sigmoid hidden layer gives
exact zeros) is judged by the absolute error instead.

The point checked is a freshly initialised network (the run's init and hidden size) with random
biases instead of zeros, so that every term of the forward pass matters. The inputs are a random
batch X ~ N(0, 1) / sqrt(d) (so a hidden unit's pre-activation has about the spread of one
weight, and the sigmoid is not saturated for any init) with uniformly random labels. The check is
about the formulas, and random data exercise every entry. With dropout rates the batch gets
masks drawn like a training batch's, and both sides use them: the gradients checked are then
those of the thinned network (``nn.dropout``), whose objective ``thinned_logits`` computes plainly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlp_cli.errors import ConfigError
from mlp_cli.nn import backprop
from mlp_cli.nn import network as model
from mlp_cli.nn.dropout import Masks, draw_masks, thinned_logits
from mlp_cli.nn.loss import LOSSES
from mlp_cli.nn.network import CLASSES, INPUTS, PARAM_NAMES, Params
from mlp_cli.nn.workspace import Workspace

EPS = 1e-5  # finite-difference step
TOLERANCE = 1e-6  # largest relative error that passes (typical: 1e-10 .. 1e-8)
ABS_FLOOR = 1e-9  # gradients this small are at the rounding floor of the difference quotient

GradientFn = Callable[..., tuple[float, Params]]


@dataclass(frozen=True)
class ParamCheck:
    """The comparison for one parameter array."""

    name: str
    shape: tuple[int, ...]
    checked: int  # entries compared
    relative_error: float
    max_abs_error: float
    max_abs_gradient: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "shape": list(self.shape), "checked": self.checked,
            "relative_error": self.relative_error, "max_abs_error": self.max_abs_error,
            "max_abs_gradient": self.max_abs_gradient, "passed": self.passed,
        }


@dataclass(frozen=True)
class GradcheckResult:
    hidden: int
    batch_size: int
    l2: float
    init: str
    seed: int
    eps: float
    tolerance: float
    loss: float
    checks: tuple[ParamCheck, ...]
    dropout: float = 0.0
    input_dropout: float = 0.0

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden, "batch_size": self.batch_size, "l2": self.l2, "init": self.init,
            "seed": self.seed, "dropout": self.dropout, "input_dropout": self.input_dropout,
            "dtype": "float64", "eps": self.eps, "tolerance": self.tolerance,
            "loss": self.loss, "passed": self.passed, "params": [c.to_dict() for c in self.checks],
        }


def objective(
    params: Params, X: np.ndarray, y: np.ndarray, l2: float, masks: Masks | None = None,
    loss_name: str = "cross_entropy",
) -> float:
    """J_reg = mean loss (of the unit ``loss_name`` in nn.loss.LOSSES) + lambda (|W1|^2 + |W2|^2),
    by the plain forward path."""
    scores = model.logits(params, X) if masks is None else thinned_logits(params, X, masks)
    return LOSSES[loss_name].value(scores, y) + model.l2_penalty(params, l2)


def random_batch(batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """X (B, d) float64 ~ N(0, 1/d), y (B,) uniform over the classes."""
    X = rng.standard_normal((batch_size, INPUTS)) / np.sqrt(INPUTS)  # (B, d)
    y = rng.integers(0, CLASSES, size=batch_size)  # (B,)
    return X, y


def check_gradients(
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    l2: float = 0.0,
    *,
    rng: np.random.Generator,
    samples: int = 30,
    eps: float = EPS,
    tolerance: float = TOLERANCE,
    gradient_fn: GradientFn | None = None,
    masks: Masks | None = None,
    loss_name: str = "cross_entropy",
) -> tuple[float, tuple[ParamCheck, ...]]:
    """Compare ``gradient_fn`` (default ``loss_and_gradients``) with central differences
    on up to ``samples`` random entries of each parameter. Works on a float64 copy of params.
    With ``masks`` (dropout) the objective is the thinned network's, and ``gradient_fn`` is
    called with ``masks=``. ``loss_name`` names the objective's loss unit (nn.loss.LOSSES); another
    than the cross-entropy needs a ``gradient_fn`` of that loss (``backprop`` with ``loss_name=``)."""
    gradient_fn = gradient_fn or backprop.loss_and_gradients
    params = Params(**{k: np.array(v, dtype=np.float64) for k, v in params.as_dict().items()})
    X = np.asarray(X, dtype=np.float64)
    loss, grads = gradient_fn(params, X, y, l2) if masks is None else gradient_fn(params, X, y, l2, masks=masks)
    checks = []
    for name in PARAM_NAMES:
        array, analytic_all = params[name], np.asarray(grads[name])
        count = min(samples, array.size)
        flat_indices = rng.choice(array.size, size=count, replace=False)
        analytic = analytic_all.reshape(-1)[flat_indices]
        numeric = np.empty(count)
        flat = array.reshape(-1)  # a view: writing to it perturbs params in place
        for i, index in enumerate(flat_indices):
            saved = flat[index]
            flat[index] = saved + eps
            plus = objective(params, X, y, l2, masks, loss_name)
            flat[index] = saved - eps
            minus = objective(params, X, y, l2, masks, loss_name)
            flat[index] = saved
            numeric[i] = (plus - minus) / (2 * eps)  # dJ/dp ~ (J(p + eps) - J(p - eps)) / 2 eps
        checks.append(_compare(name, array.shape, analytic, numeric, tolerance))
    return loss, tuple(checks)


def _compare(
    name: str, shape: tuple[int, ...], analytic: np.ndarray, numeric: np.ndarray, tolerance: float
) -> ParamCheck:
    difference = float(np.linalg.norm(analytic - numeric))
    scale = float(np.linalg.norm(analytic) + np.linalg.norm(numeric))
    max_abs_error = float(np.abs(analytic - numeric).max())
    max_abs_gradient = float(max(np.abs(analytic).max(), np.abs(numeric).max()))
    if not np.isfinite(analytic).all():
        relative, passed = float("inf"), False
    elif max_abs_gradient < ABS_FLOOR:  # nothing above the rounding floor to compare relatively
        relative, passed = 0.0 if difference == 0 else difference / max(scale, ABS_FLOOR), True
    else:
        relative = difference / scale
        passed = relative <= tolerance
    return ParamCheck(
        name=name, shape=tuple(int(s) for s in shape), checked=int(analytic.size),
        relative_error=float(relative), max_abs_error=max_abs_error,
        max_abs_gradient=max_abs_gradient, passed=bool(passed),
    )


def gradcheck(
    hidden: int,
    batch_size: int,
    l2: float = 0.0,
    init: str = "xavier",
    seed: int = 0,
    *,
    samples: int = 30,
    eps: float = EPS,
    tolerance: float = TOLERANCE,
    gradient_fn: GradientFn | None = None,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    loss_name: str = "cross_entropy",
) -> GradcheckResult:
    """Initialise a float64 network like a run would (``init``, ``seed``), draw a random batch
    (and its dropout masks, with these rates) and check every parameter's gradient. Seeded: the
    same arguments give the same numbers."""
    rng = np.random.default_rng(seed)
    params = model.init_params(hidden, rng, init, dtype="float64")
    # A run starts with zero biases; random ones make the point generic, so that a backward pass
    # that forgot a bias in its own forward half cannot agree with the differences by accident.
    params.b1[:] = 0.5 * rng.standard_normal(hidden)
    params.b2[:] = 0.5 * rng.standard_normal(CLASSES)
    X, y = random_batch(batch_size, rng)
    masks = None
    if dropout > 0 or input_dropout > 0:
        masks = draw_masks(rng, batch_size, INPUTS, hidden, input_dropout, dropout, np.dtype(np.float64), Workspace())
        _refuse_vacuous(masks, batch_size)
    loss, checks = check_gradients(
        params, X, y, l2, rng=rng, samples=samples, eps=eps, tolerance=tolerance, gradient_fn=gradient_fn, masks=masks,
        loss_name=loss_name,
    )
    return GradcheckResult(
        hidden=hidden, batch_size=batch_size, l2=l2, init=init, seed=seed, eps=eps,
        tolerance=tolerance, loss=loss, checks=checks, dropout=dropout, input_dropout=input_dropout,
    )


def _refuse_vacuous(masks: Masks, batch_size: int) -> None:
    """Every unit of a layer dropped from the whole batch: W1's gradients (and b1's and W2's, for
    the hidden units) are exactly 0 on both sides, and their check would pass over nothing."""
    for keep, layer, key in ((masks.hidden, "hidden unit", "train.dropout"),
                             (masks.inputs, "input pixel", "train.input_dropout")):
        if keep is not None and not keep.any():
            raise ConfigError(f"every {layer} of the batch of {batch_size} is dropped by these dropout rates, so the "
                              f"gradients through them are 0 on both sides and nothing would be checked; lower {key} "
                              "or use a larger --batch")
