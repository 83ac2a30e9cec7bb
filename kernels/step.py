"""Whole-minibatch fused training for networks with one hidden layer (D -> H -> C).

``fused_batches(X, y, index, use_index, start, stop, batch, W1, b1, W2, b2, code, adam, lr,
momentum, nesterov, use_velocity, beta1, beta2, eps, weight_decay, step, s1, s2, s3, s4,
q1, q2, q3, q4, T) -> (loss_sum, correct, step)``

Trains the consecutive minibatches of ``batch`` rows (the last may be smaller) taken from rows
``index[start:stop]`` (or ``start:stop`` when not ``use_index``) of X (N, D) and labels y (N,).
Each step is one parallel pass in which each of the T threads runs forward, softmax
cross-entropy and backward for its share of the batch rows into its own gradient buffers, then
one parallel pass that sums the buffers and applies the update; no BLAS call, no Python between
steps. For narrow layers this is where framework overhead dominates the peers, since each
layer's matrix is too small for BLAS; for wider ones (up to a few hundred units) it still wins
by reading the sampled rows in place and keeping all work on one thread pool.

A thread works on tiles of up to SPAN rows, one row of activations after another, with the
hidden units (and classes) padded to whole SIMD vectors (kernels/simd.py). The hidden layer's
products are register blocks of 4 rows x 2 vectors of units, each input broadcast against a
vector of weights: ``_block`` for the forward pass and for the gradient of the activations
(with the activation or its derivative applied in registers), ``_rank_update`` for the weight
gradients, summed over the tile. The padding lanes of weights, biases and activations stay
zero, so they add nothing and their gradients are zero.

W1 (D, H), b1 (H,), W2 (H, C), b2 (C,) and the optimizer slots are updated in place: s_k is
the velocity (SGD with momentum) or Adam's first moment of parameter k, q_k Adam's second
moment; unused slots may be empty arrays of the right rank. ``loss_sum`` is the sum of the
per-sample losses, ``correct`` the number of rows whose argmax logit is the label, ``step``
the optimizer's step counter after the last update.
"""

import math

import numpy as np
from fastnn.kernels.activations import (
    ACTIVATION_CODES,
    KERNEL,
    activate,
    vderivative_from_output,
    vrelu,
)
from fastnn.kernels.optim import update_span
from fastnn.kernels.simd import (
    lanes,
    vadd,
    vexp,
    vfirst_equal,
    vfma,
    vload,
    vmax_lanes,
    vmaximum,
    vmul,
    vsplat,
    vstore,
    vsub,
    vsum_lanes,
)
from numba import njit, prange

FASTMATH = {"reassoc", "contract", "nsz"}  # no "fast" NaN/inf assumptions

SPAN = 64  # rows per tile, a multiple of BLOCK
BLOCK = 8  # the tile's rows are padded to a multiple of this (repeating its last row)
KCHUNK = 128  # inputs per pass of _forward_rows
RELU, IDENTITY = ACTIVATION_CODES["relu"], ACTIVATION_CODES["identity"]
PAD = 16  # elements (64 bytes or more) between threads' small gradient buffers


# A register block is 4 rows x 2 or 3 vectors, held as columns: a column is the 4 rows' vectors
# at one vector offset j of rows P elements apart (rows o, o + P, o + 2P, o + 3P of a flat
# buffer). Each input is broadcast once per row against all the block's weight vectors.


@njit(fastmath=FASTMATH, **KERNEL)
def _col_load(a, o, P, j):
    return vload(a, o + j), vload(a, o + P + j), vload(a, o + 2 * P + j), vload(a, o + 3 * P + j)


@njit(fastmath=FASTMATH, **KERNEL)
def _col_splat(x):
    return x, x, x, x


@njit(fastmath=FASTMATH, **KERNEL)
def _col_store(a, o, P, j, col):
    vstore(a, o + j, col[0])
    vstore(a, o + P + j, col[1])
    vstore(a, o + 2 * P + j, col[2])
    vstore(a, o + 3 * P + j, col[3])


@njit(fastmath=FASTMATH, **KERNEL)
def _col_fma(x, w, col):
    """col + x * w, row by row: x holds the 4 rows' broadcast inputs, w one weight vector."""
    return (
        vfma(x[0], w, col[0]),
        vfma(x[1], w, col[1]),
        vfma(x[2], w, col[2]),
        vfma(x[3], w, col[3]),
    )


@njit(fastmath=FASTMATH, **KERNEL)
def _col_relu(col):
    return vrelu(col[0]), vrelu(col[1]), vrelu(col[2]), vrelu(col[3])


@njit(fastmath=FASTMATH, **KERNEL)
def _col_backward(col, hid, o, P, j, code, one):
    """col * act'(hid's column at o, j), and the column's sum over its 4 rows."""
    y = _col_load(hid, o, P, j)
    a = vmul(col[0], vderivative_from_output(y[0], code, one))
    b = vmul(col[1], vderivative_from_output(y[1], code, one))
    c = vmul(col[2], vderivative_from_output(y[2], code, one))
    d = vmul(col[3], vderivative_from_output(y[3], code, one))
    return (a, b, c, d), vadd(vadd(a, b), vadd(c, d))


@njit(fastmath=FASTMATH, **KERNEL)
def _rows_block(A, r, k0, k1, B, P, j0, j1, j2, width, u, v, w):
    """Columns u, v (and w when width is 3) at vectors j0, j1, j2 plus A[r, k0:k1] @ B[k0:k1]
    for the 4 rows r of A; B has P columns."""
    for k in range(k0, k1):
        x = vsplat(A[r[0], k]), vsplat(A[r[1], k]), vsplat(A[r[2], k]), vsplat(A[r[3], k])
        u = _col_fma(x, vload(B, k * P + j0), u)
        v = _col_fma(x, vload(B, k * P + j1), v)
        if width == 3:
            w = _col_fma(x, vload(B, k * P + j2), w)
    return u, v, w


@njit(fastmath=FASTMATH, **KERNEL)
def _widths(P, W):
    """Vector offsets and widths of the column blocks over P (a whole number of vectors W
    wide): pairs, with a triple where the count is odd; one vector is a pair of itself."""
    n = P // W
    pairs = n // 2 if n > 1 else 1
    return pairs, n % 2 == 1 and n > 1


@njit(fastmath=FASTMATH, **KERNEL)
def _forward_rows(X, rows, m, W1p, b1p, relu, hid):
    """hid[i] = X[rows[i]] @ W1p + b1p for i < m (a multiple of 4), through relu when asked.
    The inputs run in chunks of KCHUNK, so that the chunk of W1p that every block of rows
    reads stays in L1."""
    D = X.shape[1]
    P = hid.shape[1]
    W = lanes(hid)
    pairs, triple = _widths(P, W)
    for k0 in range(0, D, KCHUNK):
        k1 = min(k0 + KCHUNK, D)
        for p in range(pairs):
            j0 = 2 * p * W
            j1 = min(j0 + W, P - W)
            width = 3 if triple and p == pairs - 1 else 2
            j2 = j1 + W if width == 3 else j1
            for b in range(0, m, 4):
                o = b * P
                if k0 == 0:
                    u, v, w = (
                        _col_splat(vload(b1p, j0)),
                        _col_splat(vload(b1p, j1)),
                        _col_splat(vload(b1p, j2)),
                    )
                else:
                    u, v, w = (
                        _col_load(hid, o, P, j0),
                        _col_load(hid, o, P, j1),
                        _col_load(hid, o, P, j2),
                    )
                r = rows[b], rows[b + 1], rows[b + 2], rows[b + 3]
                u, v, w = _rows_block(X, r, k0, k1, W1p, P, j0, j1, j2, width, u, v, w)
                if relu and k1 == D:
                    u, v, w = _col_relu(u), _col_relu(v), _col_relu(w)
                _col_store(hid, o, P, j0, u)
                _col_store(hid, o, P, j1, v)
                if width == 3:
                    _col_store(hid, o, P, j2, w)


@njit(fastmath=FASTMATH, **KERNEL)
def _backward_rows(dz, C, m, W2T, hid, code, dhid, gb1):
    """dhid[i] = (dz[i, :C] @ W2T) * act'(hid[i]) for i < m (a multiple of 4), its column sums
    added to gb1; blocked as _forward_rows."""
    P = hid.shape[1]
    W = lanes(hid)
    one, zero = vsplat(hid.dtype.type(1)), vsplat(hid.dtype.type(0))
    pairs, triple = _widths(P, W)
    for p in range(pairs):
        j0 = 2 * p * W
        j1 = min(j0 + W, P - W)
        width = 3 if triple and p == pairs - 1 else 2
        j2 = j1 + W if width == 3 else j1
        s0 = s1 = s2 = zero
        for b in range(0, m, 4):
            o = b * P
            u = v = w = _col_splat(zero)
            u, v, w = _rows_block(
                dz, (b, b + 1, b + 2, b + 3), 0, C, W2T, P, j0, j1, j2, width, u, v, w
            )
            u, t0 = _col_backward(u, hid, o, P, j0, code, one)
            v, t1 = _col_backward(v, hid, o, P, j1, code, one)
            _col_store(dhid, o, P, j0, u)
            _col_store(dhid, o, P, j1, v)
            s0, s1 = vadd(s0, t0), vadd(s1, t1)
            if width == 3:
                w, t2 = _col_backward(w, hid, o, P, j2, code, one)
                _col_store(dhid, o, P, j2, w)
                s2 = vadd(s2, t2)
        vstore(gb1, j0, vadd(vload(gb1, j0), s0))
        if j1 != j0:
            vstore(gb1, j1, vadd(vload(gb1, j1), s1))
        if width == 3:
            vstore(gb1, j2, vadd(vload(gb1, j2), s2))


@njit(fastmath=FASTMATH, **KERNEL)
def _rank_update(A, rows, K, m, B, G):
    """G[k] += sum over i < m of A[rows[i], k] * B[i] for k < K: B (., P) and G (K, P) with P a
    whole number of vectors. Blocks of 4 rows of G x 2 or 3 vectors (as _forward_rows), summed
    in registers over the tile; where K runs out the block repeats its last row (the same
    value stored twice)."""
    P = G.shape[1]
    W = lanes(G)
    pairs, triple = _widths(P, W)
    for k0 in range(0, K, 4):
        kb, kc, kd = min(k0 + 1, K - 1), min(k0 + 2, K - 1), min(k0 + 3, K - 1)
        for p in range(pairs):
            j0 = 2 * p * W
            j1 = min(j0 + W, P - W)
            width = 3 if triple and p == pairs - 1 else 2
            j2 = j1 + W if width == 3 else j1
            # the 4 rows of G are k0..kd, not evenly spaced when K runs out: load them one by one
            u = (
                vload(G, k0 * P + j0),
                vload(G, kb * P + j0),
                vload(G, kc * P + j0),
                vload(G, kd * P + j0),
            )
            v = (
                vload(G, k0 * P + j1),
                vload(G, kb * P + j1),
                vload(G, kc * P + j1),
                vload(G, kd * P + j1),
            )
            w = (
                vload(G, k0 * P + j2),
                vload(G, kb * P + j2),
                vload(G, kc * P + j2),
                vload(G, kd * P + j2),
            )
            for i in range(m):
                r = rows[i]
                x = vsplat(A[r, k0]), vsplat(A[r, kb]), vsplat(A[r, kc]), vsplat(A[r, kd])
                u = _col_fma(x, vload(B, i * P + j0), u)
                v = _col_fma(x, vload(B, i * P + j1), v)
                if width == 3:
                    w = _col_fma(x, vload(B, i * P + j2), w)
            for q, k in enumerate((k0, kb, kc, kd)):
                vstore(G, k * P + j0, u[q])
                vstore(G, k * P + j1, v[q])
                if width == 3:
                    vstore(G, k * P + j2, w[q])


@njit(fastmath=FASTMATH, **KERNEL)
def _softmax_xent(hid, H, W2p, b2p, mask, C, y, rows, m, m8, inv_n, dz, gb2, loss, correct):
    """Logits of the tile's rows (blocks of BLOCK rows x one vector of classes), then per row
    i < m softmax cross-entropy into loss[0] and correct[0], and dz[i] = dL/dlogits (zero for
    i in [m, m8)), added to gb2. mask is 0 for classes < C and -inf for the padding lanes."""
    CP = dz.shape[1]
    W = lanes(dz)
    f = dz.dtype.type
    for b in range(0, m8, BLOCK):
        for v in range(0, CP, W):
            z0 = z1 = z2 = z3 = z4 = z5 = z6 = z7 = vload(b2p, v)
            for j in range(H):
                w = vload(W2p, j * CP + v)
                z0 = vfma(vsplat(hid[b, j]), w, z0)
                z1 = vfma(vsplat(hid[b + 1, j]), w, z1)
                z2 = vfma(vsplat(hid[b + 2, j]), w, z2)
                z3 = vfma(vsplat(hid[b + 3, j]), w, z3)
                z4 = vfma(vsplat(hid[b + 4, j]), w, z4)
                z5 = vfma(vsplat(hid[b + 5, j]), w, z5)
                z6 = vfma(vsplat(hid[b + 6, j]), w, z6)
                z7 = vfma(vsplat(hid[b + 7, j]), w, z7)
            for q, z in enumerate((z0, z1, z2, z3, z4, z5, z6, z7)):
                vstore(dz, (b + q) * CP + v, vadd(z, vload(mask, v)))
    loss_sum = 0.0
    hits = 0
    for i in range(m):
        o = i * CP
        top = vload(dz, o)
        for v in range(W, CP, W):
            top = vmaximum(top, vload(dz, o + v))
        t = vmax_lanes(top)
        label = y[rows[i]]
        for v in range(0, CP, W):  # the first class with the top logit, as argmax
            first = vfirst_equal(vload(dz, o + v), t)
            if first < W:
                hits += v + first == label
                break
        loss_sum += t - dz[i, label]
        total = f(0)
        for v in range(0, CP, W):
            e = vexp(vsub(vload(dz, o + v), vsplat(t)))
            vstore(dz, o + v, e)
            total += vsum_lanes(e)
        loss_sum += math.log(total)
        scale = vsplat(f(inv_n / total))
        for v in range(0, CP, W):
            vstore(dz, o + v, vmul(vload(dz, o + v), scale))
        dz[i, label] -= f(inv_n)
        for v in range(0, CP, W):
            vstore(gb2, v, vadd(vload(gb2, v), vload(dz, o + v)))
    for i in range(m, m8):
        for c in range(CP):
            dz[i, c] = 0
    loss[0] += loss_sum
    correct[0] += hits


@njit(fastmath=FASTMATH, **KERNEL)
def _activate_rows(hid, H, m, code):
    for i in range(m):
        for j in range(H):
            hid[i, j] = activate(hid[i, j], code)


@njit(**KERNEL)
def _workspace(W1, T, D, HP, C, CP):
    """fused_batches' buffers, allocated outside its parallel regions (where numba would turn
    each np.zeros into a parallel loop of its own): per thread gradients of W1, b1, W2T, b2,
    the tile's activations, their gradients and dL/dlogits, the tile's row numbers; then the
    rows of a tile, the logits' padding mask, and per thread loss and hit counts."""
    dtype = W1.dtype
    mask = np.zeros(CP, dtype=dtype)
    mask[C:] = -np.inf
    return (
        np.empty((T, D, HP), dtype=dtype),
        np.empty((T, HP + PAD), dtype=dtype),
        np.empty((T, C * HP + PAD), dtype=dtype),
        np.empty((T, CP + PAD), dtype=dtype),
        np.empty((T, SPAN, HP), dtype=dtype),
        np.empty((T, SPAN, HP), dtype=dtype),
        np.empty((T, SPAN, CP), dtype=dtype),
        np.empty((T, SPAN), dtype=np.int64),
        np.arange(SPAN),
        mask,
        np.zeros((T, PAD)),
        np.zeros((T, PAD), dtype=np.int64),
    )


@njit(**KERNEL)
def _padded(a, shape0, shape1, transpose):
    """a (or a.T) copied into the top-left of zeros (shape0, shape1); empty stays empty."""
    if a.size == 0:
        return np.zeros((0, 0), dtype=a.dtype)
    out = np.zeros((shape0, shape1), dtype=a.dtype)
    if transpose:  # separate loops: a shared strided view of a and a.T would not vectorise
        for i in range(a.shape[1]):
            for j in range(a.shape[0]):
                out[i, j] = a[j, i]
    else:
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                out[i, j] = a[i, j]
    return out


@njit(**KERNEL)
def _unpad(a, padded, transpose):
    """a[...] = the top-left of padded (or of padded.T); nothing when a is empty."""
    if a.size == 0:
        return
    if transpose:
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                a[i, j] = padded[j, i]
    else:
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                a[i, j] = padded[i, j]


@njit(parallel=True, fastmath=FASTMATH, **KERNEL)
def fused_batches(
    X, y, index, use_index, start, stop, batch, W1, b1, W2, b2, code, adam, lr, momentum,
    nesterov, use_velocity, beta1, beta2, eps, weight_decay, step, s1, s2, s3, s4, q1, q2, q3, q4,
    T,
):  # fmt: skip
    D, H = W1.shape
    C = W2.shape[1]
    W = lanes(W1)
    HP = -(-H // W) * W
    CP = -(-C // W) * W
    slots = adam or use_velocity
    # padded working copies: W1 (D, HP), b1 (1, HP), W2 as W2T (C, HP) for the backward pass
    # and as W2p (HP, CP) for the logits, b2 (1, CP); the optimizer updates the first three
    W1p, s1p, q1p = _padded(W1, D, HP, False), _padded(s1, D, HP, False), _padded(q1, D, HP, False)
    b1p = _padded(b1.reshape(1, H), 1, HP, False)
    s2p, q2p = _padded(s2.reshape(1, -1), 1, HP, False), _padded(q2.reshape(1, -1), 1, HP, False)
    W2T, s3T, q3T = _padded(W2, C, HP, True), _padded(s3, C, HP, True), _padded(q3, C, HP, True)
    b2p = _padded(b2.reshape(1, C), 1, CP, False)
    s4p, q4p = _padded(s4.reshape(1, -1), 1, CP, False), _padded(q4.reshape(1, -1), 1, CP, False)
    W2p = _padded(W2, HP, CP, False)
    gW1, gb1, gW2, gb2, hid, dhid, dz, rows, tile_rows, mask, loss_t, correct_t = _workspace(
        W1, T, D, HP, C, CP
    )
    W1f, s1f, q1f = W1p.reshape(-1), s1p.reshape(-1), q1p.reshape(-1)
    W2f, s3f, q3f = W2T.reshape(-1), s3T.reshape(-1), q3T.reshape(-1)
    b1f, s2f, q2f = b1p.reshape(-1), s2p.reshape(-1), q2p.reshape(-1)
    b2f, s4f, q4f = b2p.reshape(-1), s4p.reshape(-1), q4p.reshape(-1)
    gW1f = gW1.reshape(T, D * HP)
    for b_start in range(start, stop, batch):
        n = min(batch, stop - b_start)
        inv_n = 1.0 / n
        for t in prange(T):
            gW1[t] = 0
            gb1[t] = 0
            gW2[t] = 0
            gb2[t] = 0
            g2 = gW2[t, : C * HP].reshape(C, HP)
            hi = b_start + n * (t + 1) // T
            for s0 in range(b_start + n * t // T, hi, SPAN):
                m = min(SPAN, hi - s0)
                m8 = (m + BLOCK - 1) // BLOCK * BLOCK
                for i in range(m8):  # a short last block repeats the last row, unused
                    r = s0 + min(i, m - 1)
                    rows[t, i] = index[r] if use_index else r
                _forward_rows(X, rows[t], m8, W1p, b1f, code == RELU, hid[t])
                if code != RELU and code != IDENTITY:
                    _activate_rows(hid[t], H, m8, code)
                _softmax_xent(hid[t], H, W2p, b2f, mask, C, y, rows[t], m, m8, inv_n, dz[t],
                              gb2[t], loss_t[t], correct_t[t])  # fmt: skip
                _rank_update(dz[t], tile_rows, C, m8, hid[t], g2)
                _backward_rows(dz[t], C, m8, W2T, hid[t], code, dhid[t], gb1[t])
                _rank_update(X, rows[t], D, m8, dhid[t], gW1[t])
        step += 1
        c1 = 1 - beta1**step
        c2 = 1 - beta2**step
        for t in prange(T):  # reduce the thread buffers and update W1, each thread a span
            lo, hi = D * HP * t // T, D * HP * (t + 1) // T
            g = gW1f[0, lo:hi]  # views from 0: see update_span
            for u in range(1, T):
                gu = gW1f[u, lo:hi]
                for k in range(hi - lo):
                    g[k] += gu[k]
            update_span(W1f, gW1f[0], s1f if slots else W1f, q1f if adam else W1f, lo, hi, adam,
                         lr, momentum, nesterov, use_velocity, beta1, beta2, eps, weight_decay,
                         c1, c2)  # fmt: skip
        for u in range(1, T):  # loops, not array expressions: those would be parallel regions
            for k in range(HP):
                gb1[0, k] += gb1[u, k]
            for k in range(C * HP):
                gW2[0, k] += gW2[u, k]
            for k in range(CP):
                gb2[0, k] += gb2[u, k]
        update_span(b1f, gb1[0], s2f if slots else b1f, q2f if adam else b1f, 0, HP, adam, lr,
                     momentum, nesterov, use_velocity, beta1, beta2, eps, 0.0, c1, c2)  # fmt: skip
        update_span(W2f, gW2[0], s3f if slots else W2f, q3f if adam else W2f, 0, C * HP, adam,
                     lr, momentum, nesterov, use_velocity, beta1, beta2, eps, weight_decay, c1,
                     c2)  # fmt: skip
        update_span(b2f, gb2[0], s4f if slots else b2f, q4f if adam else b2f, 0, CP, adam, lr,
                     momentum, nesterov, use_velocity, beta1, beta2, eps, 0.0, c1, c2)  # fmt: skip
        for j in range(H):  # the logits' copy of W2
            for c in range(C):
                W2p[j, c] = W2T[c, j]
    _unpad(W1, W1p, False)
    _unpad(b1.reshape(1, H), b1p, False)
    _unpad(W2, W2T, True)
    _unpad(b2.reshape(1, C), b2p, False)
    if slots:
        _unpad(s1, s1p, False)
        _unpad(s2.reshape(1, H), s2p, False)
        _unpad(s3, s3T, True)
        _unpad(s4.reshape(1, C), s4p, False)
    if adam:
        _unpad(q1, q1p, False)
        _unpad(q2.reshape(1, H), q2p, False)
        _unpad(q3, q3T, True)
        _unpad(q4.reshape(1, C), q4p, False)
    loss_sum, correct = 0.0, 0
    for t in range(T):
        loss_sum += loss_t[t, 0]
        correct += correct_t[t, 0]
    return loss_sum, correct, step
