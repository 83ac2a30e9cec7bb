"""Whole-minibatch fused training for narrow networks with one hidden layer (D -> H -> C).

``fused_batches(X, y, index, use_index, start, stop, batch, W1, b1, W2, b2, code, adam, lr,
momentum, nesterov, use_velocity, beta1, beta2, eps, weight_decay, step, s1, s2, s3, s4,
q1, q2, q3, q4, T) -> (loss_sum, correct, step)``

Trains the consecutive minibatches of ``batch`` rows (the last may be smaller) taken from rows
``index[start:stop]`` (or ``start:stop`` when not ``use_index``) of X (N, D) and labels y (N,).
Each step is one parallel pass in which each of the T threads runs forward, softmax
cross-entropy and backward for its share of the batch rows into its own gradient buffers, then
one parallel pass
that sums the buffers and applies the update; no BLAS call, no Python between steps. This is
where framework overhead dominates the peers, since each layer's matrix is too small for BLAS.

W1 (D, H), b1 (H,), W2 (H, C), b2 (C,) and the optimizer slots are updated in place: s_k is
the velocity (SGD with momentum) or Adam's first moment of parameter k, q_k Adam's second
moment; unused slots may be empty arrays of the right rank. ``loss_sum`` is the sum of the
per-sample losses, ``correct`` the number of rows whose argmax logit is the label, ``step``
the optimizer's step counter after the last update.
"""

import math

import numpy as np
from fastnn.kernels.activations import KERNEL, activate, derivative_from_output
from fastnn.kernels.optim import update_span
from numba import njit, prange

# reassociation lets LLVM vectorise the dot-product reductions; no "fast" NaN/inf assumptions
FASTMATH = {"reassoc", "contract", "nsz"}


ROWS = 4  # rows per block: each weight loaded once feeds ROWS multiply-adds


@njit(parallel=True, fastmath=FASTMATH, **KERNEL)
def fused_batches(
    X, y, index, use_index, start, stop, batch, W1, b1, W2, b2, code, adam, lr, momentum,
    nesterov, use_velocity, beta1, beta2, eps, weight_decay, step, s1, s2, s3, s4, q1, q2, q3, q4,
    T,
):  # fmt: skip
    D, H = W1.shape
    C = W2.shape[1]
    slots = adam or use_velocity
    W1T = np.ascontiguousarray(W1.T)  # rows of W1T are contiguous: vectorised dot products
    s1T = np.ascontiguousarray(s1.T)
    q1T = np.ascontiguousarray(q1.T)
    gW1 = np.empty((T, H, D), dtype=W1.dtype)
    gb1 = np.empty((T, H), dtype=W1.dtype)
    gW2 = np.empty((T, H * C), dtype=W1.dtype)
    gb2 = np.empty((T, C), dtype=W1.dtype)
    hid = np.empty((T, ROWS, H), dtype=W1.dtype)
    dhid = np.empty((T, ROWS, H), dtype=W1.dtype)
    out = np.empty((T, C), dtype=W1.dtype)
    rows = np.empty((T, ROWS), dtype=np.int64)
    loss_t = np.zeros(T)
    correct_t = np.zeros(T, dtype=np.int64)
    W2f, s3f, q3f = W2.reshape(-1), s3.reshape(-1), q3.reshape(-1)
    W1f, s1f, q1f = W1T.reshape(-1), s1T.reshape(-1), q1T.reshape(-1)
    gW1f = gW1.reshape(T, H * D)
    for b_start in range(start, stop, batch):
        n = min(batch, stop - b_start)
        inv_n = 1.0 / n
        for t in prange(T):
            gW1[t] = 0
            gb1[t] = 0
            gW2[t] = 0
            gb2[t] = 0
            hi = b_start + n * (t + 1) // T
            for r0 in range(b_start + n * t // T, hi, ROWS):
                nr = min(ROWS, hi - r0)
                for i in range(ROWS):  # a short last block repeats its last row, unused
                    r = r0 + min(i, nr - 1)
                    rows[t, i] = index[r] if use_index else r
                i0, i1, i2, i3 = rows[t, 0], rows[t, 1], rows[t, 2], rows[t, 3]
                for j in range(H):
                    a0 = a1 = a2 = a3 = b1[j]
                    for d in range(D):
                        w = W1T[j, d]
                        a0 += X[i0, d] * w
                        a1 += X[i1, d] * w
                        a2 += X[i2, d] * w
                        a3 += X[i3, d] * w
                    hid[t, 0, j] = activate(a0, code)
                    hid[t, 1, j] = activate(a1, code)
                    hid[t, 2, j] = activate(a2, code)
                    hid[t, 3, j] = activate(a3, code)
                dhid[t] = 0
                for i in range(nr):
                    label = y[rows[t, i]]
                    best = 0
                    top = -np.inf
                    for c in range(C):
                        acc = b2[c]
                        for j in range(H):
                            acc += hid[t, i, j] * W2[j, c]
                        out[t, c] = acc
                        if acc > top:
                            top = acc
                            best = c
                    z_label = out[t, label]
                    total = 0.0
                    for c in range(C):
                        e = math.exp(out[t, c] - top)
                        out[t, c] = e
                        total += e
                    loss_t[t] += math.log(total) - (z_label - top)
                    correct_t[t] += best == label
                    for c in range(C):
                        dz = out[t, c] / total * inv_n
                        if c == label:
                            dz -= inv_n
                        out[t, c] = dz
                        gb2[t, c] += dz
                    for j in range(H):
                        dh = 0.0
                        for c in range(C):
                            gW2[t, j * C + c] += hid[t, i, j] * out[t, c]
                            dh += W2[j, c] * out[t, c]
                        dz = dh * derivative_from_output(hid[t, i, j], code)
                        dhid[t, i, j] = dz
                        gb1[t, j] += dz
                for j in range(H):
                    c0, c1, c2, c3 = dhid[t, 0, j], dhid[t, 1, j], dhid[t, 2, j], dhid[t, 3, j]
                    if c0 != 0 or c1 != 0 or c2 != 0 or c3 != 0:  # relu zeros skip the row
                        for d in range(D):
                            gW1[t, j, d] += (
                                c0 * X[i0, d] + c1 * X[i1, d] + c2 * X[i2, d] + c3 * X[i3, d]
                            )
        step += 1
        c1 = 1 - beta1**step
        c2 = 1 - beta2**step
        for t in prange(T):  # reduce the thread buffers and update W1, each thread a span
            lo, hi = H * D * t // T, H * D * (t + 1) // T
            g = gW1f[0]
            for u in range(1, T):
                gu = gW1f[u]
                for k in range(lo, hi):
                    g[k] += gu[k]
            update_span(W1f, g, s1f if slots else g, q1f if adam else g, lo, hi, adam, lr,
                         momentum, nesterov, use_velocity, beta1, beta2, eps, weight_decay, c1,
                         c2)  # fmt: skip
        for u in range(1, T):
            gb1[0] += gb1[u]
            gW2[0] += gW2[u]
            gb2[0] += gb2[u]
        update_span(b1, gb1[0], s2 if slots else b1, q2 if adam else b1, 0, H, adam, lr,
                     momentum, nesterov, use_velocity, beta1, beta2, eps, 0.0, c1, c2)  # fmt: skip
        update_span(W2f, gW2[0], s3f if slots else W2f, q3f if adam else W2f, 0, H * C, adam,
                     lr, momentum, nesterov, use_velocity, beta1, beta2, eps, weight_decay, c1,
                     c2)  # fmt: skip
        update_span(b2, gb2[0], s4 if slots else b2, q4 if adam else b2, 0, C, adam, lr,
                     momentum, nesterov, use_velocity, beta1, beta2, eps, 0.0, c1, c2)  # fmt: skip
    W1[:, :] = W1T.T
    if slots:
        s1[:, :] = s1T.T
    if adam:
        q1[:, :] = q1T.T
    return loss_t.sum(), correct_t.sum(), step
