"""Scalar activation functions and their derivatives, and the options shared by every kernel.

Activations are passed to kernels as integer codes (``ACTIVATION_CODES``); derivatives are
computed from the activation's *output* y, as the reference backend does. The ``v`` forms
take SIMD vectors (kernels/simd.py); tanh and sigmoid have no vector form (step.py applies
them lane by lane).
"""

import math

from fastnn.kernels.simd import vmul, vpositive, vsub
from numba import njit

ACTIVATION_CODES = {"relu": 0, "tanh": 1, "sigmoid": 2, "identity": 3}

# Options of every kernel. numpy's error model: IEEE division with no ZeroDivisionError
# branch, without which numba's loops do not vectorise (measured: Adam 25x slower).
KERNEL = {"cache": True, "error_model": "numpy"}


@njit(inline="always", **KERNEL)
def activate(z, code):
    if code == 0:
        return z if z > 0 else z * 0
    if code == 1:
        return math.tanh(z)
    if code == 2:
        return 1 / (1 + math.exp(-z))
    return z


@njit(inline="always", **KERNEL)
def derivative_from_output(y, code):
    if code == 0:
        return 1 if y > 0 else 0
    if code == 1:
        return 1 - y * y
    if code == 2:
        return y * (1 - y)
    return 1


@njit(inline="always", **KERNEL)
def vrelu(z):
    return vmul(z, vpositive(z))  # z * 0 where not positive: NaN stays NaN, as activate


@njit(inline="always", **KERNEL)
def vderivative_from_output(y, code, one):
    """derivative_from_output of each lane; one is a vector of ones."""
    if code == 0:
        return vpositive(y)
    if code == 1:
        return vsub(one, vmul(y, y))
    if code == 2:
        return vmul(y, vsub(one, y))
    return one
