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

from mlp_cli.nn.compiled_random import draw_keep  # noqa: F401  (fused.Kernels takes it from here)

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


@jit
def softmax_shift(z, rows, y, row_max, true_score):
    # z: a column-major (B, k) Z2, flat (entry (i, j) at i + B j). Each row minus its max (numpy's
    # max: a NaN wins), then Z2[i, y_i]. Returns -1, or the first row whose label is out of range.
    k = z.size // rows
    for i in range(rows):
        m = z[i]
        for j in range(1, k):
            v = z[i + rows * j]
            if v > m or v != v:
                m = v
        row_max[i] = m
        for j in range(k):
            z[i + rows * j] = z[i + rows * j] - m
        label = y[i]
        if label < 0 or label >= k:
            return i
        true_score[i] = z[i + rows * label]
    return -1


@jit
def softmax_minus_onehot(e, rows, y, row_sum, batch, one, zero, tiny):
    # e: exp(Z2 shifted), flat column-major as above. row_sum[i] = sum_j e[i, j] in numpy's order
    # (column by column), then e <- ((e / row_sum) - [j == y_i]) / B, and |entries| < tiny -> 0:
    # inplace_softmax_minus_onehot's last passes and flush_subnormals, entry by entry.
    k = e.size // rows
    for i in range(rows):
        s = e[i]
        for j in range(1, k):
            s = s + e[i + rows * j]
        row_sum[i] = s
        for j in range(k):
            x = e[i + rows * j] / s
            if j == y[i]:
                x = x - one
            x = x / batch
            if abs(x) < tiny:
                x = zero
            e[i + rows * j] = x
