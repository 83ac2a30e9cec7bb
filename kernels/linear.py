"""Dense layer epilogues around a BLAS matrix product, for the layered path.

``bias_act_(z, b, code)``: z (n, m) holds x @ W; writes act(z + b) into z in place, one pass
over the still-hot product. ``act_grad_colsum(dy, y, code)``: given dL/dy (n, m) and the layer
output y (n, m), returns dz = dy * act'(y) (n, m) and db = dz.sum(axis=0) (m,) in one pass.
float32 or float64, C-contiguous.

Serial on purpose: they run between multithreaded BLAS calls, and an OpenMP team spinning
after a parallel region starves BLAS threads of the cores (measured: 100x slower products).
"""

import numpy as np
from fastnn.kernels.activations import KERNEL, activate, derivative_from_output
from numba import njit


@njit(**KERNEL)
def bias_act_(z, b, code):
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            z[i, j] = activate(z[i, j] + b[j], code)


@njit(**KERNEL)
def act_grad_colsum(dy, y, code):
    n, m = dy.shape
    dz = np.empty_like(dy)
    db = np.zeros(m, dtype=dy.dtype)
    for i in range(n):
        for j in range(m):
            d = dy[i, j] * derivative_from_output(y[i, j], code)
            dz[i, j] = d
            db[j] += d
    return dz, db
