"""Fused softmax cross-entropy: loss and gradient in one row-wise pass, no one-hot matrix.

``softmax_xent_(logits, y, dlogits)``: logits (n, c), integer labels y (n,); writes
dL/dlogits = (softmax - onehot) / n into dlogits (n, c) and returns the mean loss (float64).
Stable for any finite logits (row maximum subtracted, log-sum-exp). ``softmax_(logits, out)``
writes row-wise probabilities into out. Serial, like linear.py: they sit between BLAS calls.
"""

import math

from fastnn.kernels.activations import KERNEL
from numba import njit


@njit(inline="always", **KERNEL)
def _exp_shifted_row(logits, i, out):
    """out[i] := exp(logits[i] - max(logits[i])); returns (that maximum, the row's sum)."""
    top = logits[i, 0]
    for j in range(1, logits.shape[1]):
        top = max(top, logits[i, j])
    s = 0.0
    for j in range(logits.shape[1]):
        e = math.exp(logits[i, j] - top)
        out[i, j] = e
        s += e
    return top, s


@njit(**KERNEL)
def softmax_xent_(logits, y, dlogits):
    n, c = logits.shape
    total = 0.0
    for i in range(n):
        top, s = _exp_shifted_row(logits, i, dlogits)
        total += math.log(s) - (logits[i, y[i]] - top)
        scale = 1.0 / (s * n)
        for j in range(c):
            dlogits[i, j] *= scale
        dlogits[i, y[i]] -= 1.0 / n
    return total / n


@njit(**KERNEL)
def softmax_(logits, out):
    for i in range(logits.shape[0]):
        s = _exp_shifted_row(logits, i, out)[1]
        for j in range(logits.shape[1]):
            out[i, j] /= s
