"""Fused optimizer updates: one pass per parameter, in place, over flat (1-D) views.

``sgd_(p, g, v, lr, momentum, nesterov, weight_decay, use_velocity)`` and
``adam_(p, g, m, v, lr, beta1, beta2, eps, weight_decay, correction1, correction2)`` where
correction_k = 1 - beta_k ** t. p, g and the slots share shape and dtype; ``v`` is unused
(may be empty) when ``use_velocity`` is False. Scalars are cast to the array's dtype so
float32 updates compute in float32, as numpy does. The scalar rules are shared with step.py.
Serial, like linear.py: they run between BLAS calls of the layered path.
"""

import numpy as np
from fastnn.kernels.activations import KERNEL
from numba import njit


@njit(inline="always", **KERNEL)
def sgd_rule(p, g, v, lr, momentum, nesterov, weight_decay, use_velocity):
    """(new p, new v) for one element; PyTorch's formulation of (Nesterov) momentum."""
    g = g + weight_decay * p
    if use_velocity:
        v = v * momentum + g
        step = g + momentum * v if nesterov else v
    else:
        step = g
    return p - lr * step, v


@njit(inline="always", **KERNEL)
def adam_rule(p, g, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
              inv_correction1, inv_correction2):  # fmt: skip
    """(new p, new m, new v) for one element."""
    g = g + weight_decay * p
    m = m * beta1 + one_minus_beta1 * g
    v = v * beta2 + one_minus_beta2 * (g * g)
    return p - lr * (m * inv_correction1) / (np.sqrt(v * inv_correction2) + eps), m, v


@njit(**KERNEL)
def sgd_(p, g, v, lr, momentum, nesterov, weight_decay, use_velocity):
    f = p.dtype.type
    lr, momentum, weight_decay = f(lr), f(momentum), f(weight_decay)
    if use_velocity:
        for i in range(p.size):
            p[i], v[i] = sgd_rule(p[i], g[i], v[i], lr, momentum, nesterov, weight_decay, True)
    else:
        for i in range(p.size):
            p[i] = p[i] - lr * (g[i] + weight_decay * p[i])


@njit(**KERNEL)
def adam_(p, g, m, v, lr, beta1, beta2, eps, weight_decay, correction1, correction2):
    f = p.dtype.type
    lr, b1, nb1, b2, nb2 = f(lr), f(beta1), f(1 - beta1), f(beta2), f(1 - beta2)
    eps, weight_decay, ic1, ic2 = f(eps), f(weight_decay), f(1 / correction1), f(1 / correction2)
    for i in range(p.size):
        p[i], m[i], v[i] = adam_rule(p[i], g[i], m[i], v[i], lr, b1, nb1, b2, nb2, eps,
                                     weight_decay, ic1, ic2)  # fmt: skip
