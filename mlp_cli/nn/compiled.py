"""The compiled kernels of ``nn.fused``, one loop each: imported only through ``fused.kernels()``.

Importing this module imports numba (the optional ``fast`` extra) and declares the kernels; each
compiles at its first call for its argument types and is cached on disk. Every loop performs,
entry by entry, the float operations of the numpy form ``nn.fused`` names, in their order; the
callers pass every scalar already cast to the arrays' dtype (``fused.run``).

The optimiser updates take the L2 term with them: with ``decay`` true the gradient entry is first
``g + c p`` (c = 2 lambda), the two roundings of ``nn.optimizers.penalised_rows``, so the penalty, the
momentum and the step are one pass over the arrays.
"""

# mypy: ignore-errors
# (numba's decorators and the untyped loops are not for mypy)

from __future__ import annotations

import numba
import numpy as np

jit = numba.njit(nogil=True, cache=True, fastmath=False, error_model="numpy")


@jit
def sgd(p, g, lr, c, decay):
    for i in range(p.size):
        gi = g[i]
        if decay:
            gi = gi + p[i] * c
        p[i] = p[i] - gi * lr


@jit
def momentum(p, g, v, mu, lr, c, decay, nesterov):
    # nn.optimizers.momentum_rows, entry by entry
    for i in range(p.size):
        gi = g[i]
        if decay:
            gi = gi + p[i] * c
        vi = v[i] * mu
        vi = vi + gi
        v[i] = vi
        s = vi
        if nesterov:
            s = vi * mu
            s = s + gi
        p[i] = p[i] - s * lr


@jit
def add_scaled(a, b, c):
    for i in range(a.size):
        a[i] = a[i] + b[i] * c


@jit
def adam(p, g, m, v, beta1, rest1, beta2, rest2, eps_hat, alpha_t, c, decay):
    for i in range(p.size):
        gi = g[i]
        if decay:
            gi = gi + p[i] * c
        mi = m[i] * beta1
        mi = mi + gi * rest1
        m[i] = mi
        s = gi * gi
        s = s * rest2
        vi = v[i] * beta2
        vi = vi + s
        v[i] = vi
        s = np.sqrt(vi)
        s = s + eps_hat
        s = mi / s
        s = s * alpha_t
        p[i] = p[i] - s


@jit
def thin(out, a, keep, scale, one, zero):
    for i in range(out.size):
        x = a[i] * (one if keep[i] else zero)  # numpy's a * keep: the bool as 1.0 or 0.0
        out[i] = x * scale


@jit
def sigmoid_backward(d, a, one):
    for i in range(d.size):
        s = one - a[i]
        s = s * a[i]
        d[i] = d[i] * s


@jit
def dropout_sigmoid_backward(d, keep, a, scale, one, zero):
    for i in range(d.size):
        x = d[i] * (one if keep[i] else zero)  # numpy's d * keep: the bool as 1.0 or 0.0
        x = x * scale
        s = one - a[i]
        s = s * a[i]
        d[i] = x * s


@jit
def bias_halve(z, b, half):
    # z <- (z + b) half, z (n, h) flattened, b (h,): the sigmoid's first two numpy passes
    h = b.size
    for r in range(z.size // h):
        base = r * h
        for j in range(h):
            z[base + j] = (z[base + j] + b[j]) * half


@jit
def shift_halve(z, one, half):
    # z <- (z + 1) half: the sigmoid's last two passes, after tanh
    for i in range(z.size):
        z[i] = (z[i] + one) * half
