"""Fused optimizer updates: one pass per parameter, in place, over flat (1-D) views.

``sgd_(p, g, v, lr, momentum, nesterov, weight_decay, use_velocity)`` and
``adam_(p, g, m, v, lr, beta1, beta2, eps, weight_decay, correction1, correction2)`` where
correction_k = 1 - beta_k ** t. p, g and the slots share shape and dtype; ``v`` is unused
(may be empty) when ``use_velocity`` is False. ``update_span`` is the one implementation of
the update loops; step.py applies it to spans of the fused kernel's parameters.
Serial, like linear.py: they run between BLAS calls of the layered path.
"""

import numpy as np
from fastnn.kernels.activations import KERNEL
from numba import njit


@njit(inline="always", **KERNEL)
def sgd_rule(p, g, v, lr, momentum, nesterov, weight_decay, use_velocity):
    """(new p, new v) for one element; scikit-learn's formulation of (Nesterov) momentum, the
    velocity holding the learning rate (as fastnn/backends/base.py)."""
    g = g + weight_decay * p
    if use_velocity:
        v = v * momentum - lr * g
        return p + (momentum * v - lr * g if nesterov else v), v
    return p - lr * g, v


@njit(inline="always", **KERNEL)
def adam_rule(p, g, m, v, step, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
              weight_decay):  # fmt: skip
    """(new p, new m, new v) for one element; ``step`` is the learning rate with the bias
    corrections in it (scikit-learn's formulation, as fastnn/backends/base.py)."""
    g = g + weight_decay * p
    m = m * beta1 + one_minus_beta1 * g
    v = v * beta2 + one_minus_beta2 * (g * g)
    return p - step * m / (np.sqrt(v) + eps), m, v


@njit(inline="always", **KERNEL)
def update_span(p, g, s, q, lo, hi, adam, lr, momentum, nesterov, use_velocity, beta1, beta2,
                eps, weight_decay, correction1, correction2):  # fmt: skip
    """Apply SGD (s: velocity) or Adam (s, q: moments) to p[lo:hi] of flat views.

    Scalars are cast to p's dtype, so float32 updates compute in float32 as numpy does; each
    rule runs in its own branch-free loop, which vectorises. Unused slots may be any array.
    The loops run over views from index 0: indices from a runtime ``lo`` may be negative as
    far as the compiler knows, and their wraparound check kept the loops scalar (measured
    11x slower Adam inside the fused kernels).
    """
    p, g, s, q = p[lo:hi], g[lo:hi], s[lo:hi], q[lo:hi]
    f = p.dtype.type
    step = f(lr * np.sqrt(correction2) / correction1)  # Adam's, from the float64 rate
    lr, momentum, weight_decay = f(lr), f(momentum), f(weight_decay)
    if adam:
        b1, nb1, b2, nb2 = f(beta1), f(1 - beta1), f(beta2), f(1 - beta2)
        eps = f(eps)
        for k in range(hi - lo):
            p[k], s[k], q[k] = adam_rule(p[k], g[k], s[k], q[k], step, b1, nb1, b2, nb2, eps,
                                         weight_decay)  # fmt: skip
    elif use_velocity:
        for k in range(hi - lo):
            p[k], s[k] = sgd_rule(p[k], g[k], s[k], lr, momentum, nesterov, weight_decay, True)
    else:
        for k in range(hi - lo):
            p[k] = sgd_rule(p[k], g[k], p[k], lr, momentum, nesterov, weight_decay, False)[0]


@njit(**KERNEL)
def sgd_(p, g, v, lr, momentum, nesterov, weight_decay, use_velocity):
    update_span(p, g, v if use_velocity else p, p, 0, p.size, False, lr, momentum, nesterov,
                use_velocity, 0.0, 0.0, 0.0, weight_decay, 1.0, 1.0)  # fmt: skip


@njit(**KERNEL)
def adam_(p, g, m, v, lr, beta1, beta2, eps, weight_decay, correction1, correction2):
    update_span(p, g, m, v, 0, p.size, True, lr, 0.0, False, False, beta1, beta2, eps,
                weight_decay, correction1, correction2)  # fmt: skip
