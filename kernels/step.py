"""Whole-minibatch fused training for networks with one hidden layer (D -> H -> C).

``fused_batches(X, y, index, use_index, start, stop, batch, W1, b1, W2, b2, code, output,
adam, rates, momentum, nesterov, use_velocity, beta1, beta2, eps, weight_decay, alpha,
dropout, seed, step, s1, s2, s3, s4, q1, q2, q3, q4, T, S) -> (loss_sum, correct, step)``

Trains the consecutive minibatches of ``batch`` rows (the last may be smaller) taken from rows
``index[start:stop]`` (or ``start:stop`` when not ``use_index``) of X (N, D) and y: labels
(N,) int64 for softmax cross-entropy, or a regression's targets, C-contiguous (N, C) of X's
dtype, against the loss ``output`` names (OUTPUT_CODES: "identity" squared error, "exp"
Poisson; fastnn/backends/base.py's maths). fused_steps is compiled per rank of y, with the
softmax's loss or the regressions'. T threads run the steps together (this one and T - 1
helper threads of fastnn's own, kernels/team.py). In each step they claim tiles of the batch
rows one at a time and run forward, loss and backward for each into the tile's own gradient
buffers; when every tile is done, they claim chunks of the parameters, over which each sums
the tiles' gradients in tile order and applies the update; they meet again before the next
step. No BLAS call, no Python between steps. How a step's rows are cut into tiles depends on S
(the most threads the process may run) and not on T (those running this call), so the
result is bitwise the same at any thread count. For narrow layers this is where
framework overhead dominates the peers, since each layer's matrix is too small for BLAS; for
wider ones (up to a few hundred units) it still wins by reading the sampled rows in place and
keeping all work on one thread pool.

A tile is processed SPAN rows at a time, one row of activations after another, with the
hidden units (and classes) padded to whole SIMD vectors (kernels/simd.py); the parameters,
their optimizer slots and the gradients live in one flat padded layout (``_views``). The
hidden layer's products are register blocks of 4 rows x 2 or 3 vectors of units, each input
broadcast against whole vectors of weights: ``_forward_pair`` / ``_forward_triple`` for the
forward pass (as many triples as leave whole pairs), ``_rows_block`` for the gradient of the
activations (with the activation or its derivative applied in registers), ``_rank_update``
for the weight gradients, summed over the rows (pairs, one triple where the count is odd).
A block fits AVX2's 16 vector registers as well as AVX-512's 32: each input is broadcast and
used at once (``_fma_pair``), and pairs and triples run in loops of their own. The padding lanes of
weights, biases and activations stay zero, so they add nothing and their gradients are zero.

W1 (D, H), b1 (H,), W2 (H, C), b2 (C,) and the optimizer slots are updated in place: s_k is
the velocity (SGD with momentum) or Adam's first moment of parameter k, q_k Adam's second
moment; unused slots may be empty arrays of the right rank. The weights' gradients get
``weight_decay`` * W and scikit-learn's ``alpha`` / rows * W (fastnn/optim.py's Optimizer).
``loss_sum`` is the sum of the per-sample losses (with alpha, plus each step's alpha / 2 *
|W|^2 of the weights before it, as the reference's), ``correct`` the number of rows whose
argmax logit is the label (0 for a regression), ``step`` the optimizer's step counter after
the last update (``step`` before the first).

``rates`` (float64, one per step of the call: ceil((stop - start) / batch)) is each update's
learning rate, the schedule's rate of update number step + k for the call's k-th step
(fastnn/optim.py's Optimizer.rate), so that a run split over several calls trains as one.
With ``dropout`` > 0 each step drops hidden units as fastnn/dropout.py's hash of (``seed``,
the step's number, layer 0, the row's place in its minibatch, the unit) says
(kernels/dropout.py's dropout_rows, on the rows of each SPAN as it goes): the logits and W2's
gradient see hid * mask, and the hidden gradient is ((dz @ W2.T) * mask) * act'(hid) with
act' from the activations before the mask, the reference's order. The masks follow the rows'
places in the minibatch, never a tile's, so the result stays the same at any thread count;
without dropout the kernel runs the code it ran before (one branch per SPAN of rows, one per
register block of the hidden gradient).

fused_batches itself is plain numpy (the flat padded copies and the buffers, kept between a
thread's calls of the same small shapes) around one compiled kernel, fused_steps, that each
thread runs: each function numba compiles costs a typing, an LLVM optimisation and machine
code of its own, and a cold run's compile time is mostly that (18.3 s before, 15.3 s after,
for a default digits run on Zen 5). Its threads are fastnn's, meeting at counters
(kernels/atomic.py), rather than numba's parallel loops, whose parfor passes cost a cold
digits run another 6-7 s (a warm-up of 15.6-17.2 s, 9.5-9.9 s without them, on a 2-core
Zen 4). The helpers stay separate functions, not ``inline="always"``: inlined before typing
they compiled no faster here (10.7 s), and a kernel compiled in memory once computed
different bits from its copy loaded from numba's cache.
"""

import math
import threading

import numpy as np
from fastnn.kernels.activations import (
    ACTIVATION_CODES,
    KERNEL,
    activate,
    vderivative_from_output,
    vrelu,
)
from fastnn.kernels.atomic import SPINS, fetch_add, load, yield_core
from fastnn.kernels.dropout import dropout_rows, layer_key
from fastnn.kernels.optim import update_span
from fastnn.kernels.simd import (
    BYTES,
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
from fastnn.kernels.target import VECTOR_REGISTERS
from fastnn.kernels.team import linger, team
from numba import njit

from fastnn.dropout import MASK32, keep_scale, threshold

FASTMATH = {"reassoc", "contract", "nsz"}  # no "fast" NaN/inf assumptions

SPAN = 64  # rows per tile, a multiple of BLOCK
BLOCK = 8  # the tile's rows are padded to a multiple of this (repeating its last row)
KCHUNK = 128  # inputs per pass of _forward_rows
RELU, IDENTITY = ACTIVATION_CODES["relu"], ACTIVATION_CODES["identity"]
OUTPUT_CODES = {"softmax": 0, "identity": 1, "exp": 2}  # fused_batches' output: its loss
POISSON = OUTPUT_CODES["exp"]
# A step's rows are cut into tiles that threads claim one at a time, so that a thread on a
# slower core (a busy neighbour on a shared VM, an efficiency core) takes fewer. Each tile
# sums its own gradients, added up in tile order: the result does not depend on which thread
# ran which tile. More tiles balance better but cost a pass over their gradients each.
MIN_TILE = 32  # rows
TILES_PER_THREAD = 4
PARTIAL_BYTES = 1 << 19  # at most this much of tile gradients (L2-sized)
# _forward_dots (dot products along the inputs) against _forward_rows (vectors of units) for
# the first layer, measured by ``python -m bench.kernel_paths narrow`` (fused 784-H-10 SGD
# epochs, b64, b128 and full batch, rows / dots time) on a 2-core Zen 4: dots win up to 1.5
# vectors of units on every target, float32 and float64 (AVX-512 float32 H=24: 1.04-1.18x,
# float64 H=12: 0.95-1.86x; AVX2 (haswell) float32 H=12: 1.32-1.79x, float64 H=6:
# 1.03-1.17x), and are mixed from 2 vectors on (AVX-512 float32 H=32: 0.91-1.53x, float64
# H=16: 0.68-0.97x; AVX2 float32 H=16: 0.82-1.11x). A 2-core Zen 1 agreed for AVX2 float32
# (H=12 1.08-1.53x, H=16 0.82-0.93x).
NARROW_VECTORS = 1.5  # most vectors of hidden units for _forward_dots
NARROW_INPUTS = 16  # per hidden unit, at least, for _forward_dots
# _forward_dots' block: 4 rows x DOT_UNITS units is 4 * DOT_UNITS accumulators, 4 input vectors
# and a weight vector in registers: 21 of AVX-512's 32, and 13 of AVX2's 16 with 2 units (4
# spill on AVX2: 784 inputs x 64 rows, one thread, haswell on Zen 4: 42-58 GFLOP/s with 4
# units, 53-77 with 2; float64 22-30 vs 35-38. AVX-512: 4 units 68-96, 2 units 66-82).
DOT_UNITS = 4 if VECTOR_REGISTERS >= 32 else 2
PAD = 16  # elements (64 bytes or more) after each tile's gradients and counts
# fused_steps' threads meet through counters, each on a cache line of its own, four per step:
# tiles claimed, tiles done, update chunks claimed, update chunks done; after the last step's,
# a flag that a thread failed
SYNC = 8  # int64s per counter
CLAIMED, DONE, UPDATE_CLAIMED, UPDATED = 0, SYNC, 2 * SYNC, 3 * SYNC
UPDATE_CHUNK = 8192  # elements of the flat parameters a thread claims at a time to update
ALIGN = 64  # bytes: where _aligned's arrays start


# A register block is 4 rows x 2 or 3 vectors, held as columns: a column is the 4 rows'
# vectors at one vector offset j of a (., P) buffer. Each input is broadcast once per row
# against all the block's weight vectors.


@njit(fastmath=FASTMATH, **KERNEL)
def _col_splat(x):
    return x, x, x, x


@njit(fastmath=FASTMATH, **KERNEL)
def _rows_load(a, ks, P, j):
    """The column at j of rows ks (4 row numbers) of a (., P)."""
    return (
        vload(a, ks[0] * P + j),
        vload(a, ks[1] * P + j),
        vload(a, ks[2] * P + j),
        vload(a, ks[3] * P + j),
    )


@njit(fastmath=FASTMATH, **KERNEL)
def _rows_store(a, ks, P, j, col):
    """The column at j of rows ks of a (., P) = col."""
    vstore(a, ks[0] * P + j, col[0])
    vstore(a, ks[1] * P + j, col[1])
    vstore(a, ks[2] * P + j, col[2])
    vstore(a, ks[3] * P + j, col[3])


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
def _col_backward(col, hid, keep, dropping, ks, P, j, code, one):
    """col * act'(hid's column at rows ks, j), and the column's sum over its 4 rows; when
    ``dropping``, col is first multiplied by keep's column (the dropout mask), as the
    reference multiplies the gradient by the mask before act'."""
    if dropping:
        k = _rows_load(keep, ks, P, j)
        col = vmul(col[0], k[0]), vmul(col[1], k[1]), vmul(col[2], k[2]), vmul(col[3], k[3])
    y = _rows_load(hid, ks, P, j)
    a = vmul(col[0], vderivative_from_output(y[0], code, one))
    b = vmul(col[1], vderivative_from_output(y[1], code, one))
    c = vmul(col[2], vderivative_from_output(y[2], code, one))
    d = vmul(col[3], vderivative_from_output(y[3], code, one))
    return (a, b, c, d), vadd(vadd(a, b), vadd(c, d))


@njit(fastmath=FASTMATH, **KERNEL)
def _fma_pair(x, w0, w1, u, v):
    """Columns u, v plus x * w0, x * w1, row by row: x holds the 4 rows' inputs (scalars).
    Each input is broadcast and used against every vector of the block before the next, so
    a block holds one broadcast at a time: 8 accumulators, 2 weights and 1 input, where AVX2
    has 16 registers (4 broadcasts first, and LLVM's unrolling, spilled an accumulator)."""
    s = vsplat(x[0])
    u0, v0 = vfma(s, w0, u[0]), vfma(s, w1, v[0])
    s = vsplat(x[1])
    u1, v1 = vfma(s, w0, u[1]), vfma(s, w1, v[1])
    s = vsplat(x[2])
    u2, v2 = vfma(s, w0, u[2]), vfma(s, w1, v[2])
    s = vsplat(x[3])
    u3, v3 = vfma(s, w0, u[3]), vfma(s, w1, v[3])
    return (u0, u1, u2, u3), (v0, v1, v2, v3)


@njit(fastmath=FASTMATH, **KERNEL)
def _fma_triple(x, w0, w1, w2, u, v, w):
    """_fma_pair with a third column w and weight w2: 12 accumulators, 3 weights, 1 input."""
    s = vsplat(x[0])
    u0, v0, z0 = vfma(s, w0, u[0]), vfma(s, w1, v[0]), vfma(s, w2, w[0])
    s = vsplat(x[1])
    u1, v1, z1 = vfma(s, w0, u[1]), vfma(s, w1, v[1]), vfma(s, w2, w[1])
    s = vsplat(x[2])
    u2, v2, z2 = vfma(s, w0, u[2]), vfma(s, w1, v[2]), vfma(s, w2, w[2])
    s = vsplat(x[3])
    u3, v3, z3 = vfma(s, w0, u[3]), vfma(s, w1, v[3]), vfma(s, w2, w[3])
    return (u0, u1, u2, u3), (v0, v1, v2, v3), (z0, z1, z2, z3)


@njit(fastmath=FASTMATH, **KERNEL)
def _rows_block(A, r, k0, k1, B, P, j0, j1, j2, width, u, v, w):
    """Columns u, v (and w when width is 3) at vectors j0, j1, j2 plus A[r, k0:k1] @ B[k0:k1]
    for the 4 rows r of A; B has P columns. One loop per width: a third column carried
    through a pair's loop costs AVX2 registers it does not have."""
    if width == 3:
        for k in range(k0, k1):
            o = k * P
            x = A[r[0], k], A[r[1], k], A[r[2], k], A[r[3], k]
            u, v, w = _fma_triple(x, vload(B, o + j0), vload(B, o + j1), vload(B, o + j2),
                                  u, v, w)  # fmt: skip
    else:
        for k in range(k0, k1):
            o = k * P
            x = A[r[0], k], A[r[1], k], A[r[2], k], A[r[3], k]
            u, v = _fma_pair(x, vload(B, o + j0), vload(B, o + j1), u, v)
    return u, v, w


@njit(fastmath=FASTMATH, **KERNEL)
def _most_triples(n):
    """The most column blocks over n vectors that can be triples, leaving a whole number of
    pairs (n = 3 * triples + 2 * pairs)."""
    return 0 if n < 2 else n // 3 if n % 3 == 0 else (n - 2) // 3 if n % 3 == 2 else (n - 4) // 3


@njit(fastmath=FASTMATH, **KERNEL)
def _one_triple(n):
    """Pairs, and one triple where the count n of vectors is odd: the blocks of _rank_update
    and _backward_rows, whose loops carry a triple's third column through every block (a
    784x128 weight gradient on one Zen 4 core, haswell target: 70-78 GFLOP/s in pairs, 46-54
    with _most_triples, which spill there)."""
    return n % 2 if n > 1 else 0


@njit(fastmath=FASTMATH, **KERNEL)
def _blocks(P, W, triples):
    """How many column blocks cover P (a whole number of vectors W wide) with this many
    triples and the rest pairs; one vector is a pair of itself."""
    return max(1, triples + (P // W - 3 * triples) // 2)


@njit(fastmath=FASTMATH, **KERNEL)
def _block(p, P, W, triples):
    """Vector offsets j0, j1, j2 and width (2 or 3) of column block p: the triples first,
    then pairs; j1 is j0 (computed and stored twice, the same value) for a single vector, j2
    is j1 unless 3."""
    if p < triples:
        j0 = 3 * p * W
        return j0, j0 + W, j0 + 2 * W, 3
    j0 = (3 * triples + 2 * (p - triples)) * W
    j1 = min(j0 + W, P - W)
    return j0, j1, j1, 2


@njit(fastmath=FASTMATH, **KERNEL)
def _forward_rows(X, rows, m, W1p, b1p, relu, hid):
    """hid[i] = X[rows[i]] @ W1p + b1p for i < m (a multiple of 4), through relu when asked.
    The inputs run in chunks of KCHUNK, so that the chunk of W1p that every block of rows
    reads stays in L1."""
    D = X.shape[1]
    P = hid.shape[1]
    W = lanes(hid)
    triples = _most_triples(P // W)
    blocks = _blocks(P, W, triples)
    for k0 in range(0, D, KCHUNK):
        k1 = min(k0 + KCHUNK, D)
        for p in range(blocks):
            j0, j1, j2, width = _block(p, P, W, triples)
            if width == 3:
                _forward_triple(X, rows, m, k0, k1, W1p, b1p, relu and k1 == D, hid, j0, j1, j2)
            else:
                _forward_pair(X, rows, m, k0, k1, W1p, b1p, relu and k1 == D, hid, j0, j1)


@njit(fastmath=FASTMATH, **KERNEL)
def _forward_pair(X, rows, m, k0, k1, W1p, b1p, relu, hid, j0, j1):
    """_forward_rows' inputs k0:k1 for the vectors j0, j1 of every block of 4 rows (b1p first
    when k0 is 0, relu last when asked). Pairs and triples have loops of their own, each
    compiled with only its accumulators live: a third column carried through a pair's loop
    spilled accumulators on AVX2's 16 registers (784x128 on one Zen 4 core, haswell target:
    45-47 -> 93-102 GFLOP/s)."""
    P = hid.shape[1]
    for b in range(0, m, 4):
        ks = b, b + 1, b + 2, b + 3
        if k0 == 0:
            u, v = _col_splat(vload(b1p, j0)), _col_splat(vload(b1p, j1))
        else:
            u, v = _rows_load(hid, ks, P, j0), _rows_load(hid, ks, P, j1)
        r = rows[b], rows[b + 1], rows[b + 2], rows[b + 3]
        for k in range(k0, k1):
            o = k * P
            x = X[r[0], k], X[r[1], k], X[r[2], k], X[r[3], k]
            u, v = _fma_pair(x, vload(W1p, o + j0), vload(W1p, o + j1), u, v)
        if relu:
            u, v = _col_relu(u), _col_relu(v)
        _rows_store(hid, ks, P, j0, u)
        _rows_store(hid, ks, P, j1, v)


@njit(fastmath=FASTMATH, **KERNEL)
def _forward_triple(X, rows, m, k0, k1, W1p, b1p, relu, hid, j0, j1, j2):
    """_forward_pair for the three vectors j0, j1, j2."""
    P = hid.shape[1]
    for b in range(0, m, 4):
        ks = b, b + 1, b + 2, b + 3
        if k0 == 0:
            u, v = _col_splat(vload(b1p, j0)), _col_splat(vload(b1p, j1))
            w = _col_splat(vload(b1p, j2))
        else:
            u, v = _rows_load(hid, ks, P, j0), _rows_load(hid, ks, P, j1)
            w = _rows_load(hid, ks, P, j2)
        r = rows[b], rows[b + 1], rows[b + 2], rows[b + 3]
        for k in range(k0, k1):
            o = k * P
            x = X[r[0], k], X[r[1], k], X[r[2], k], X[r[3], k]
            u, v, w = _fma_triple(x, vload(W1p, o + j0), vload(W1p, o + j1), vload(W1p, o + j2),
                                  u, v, w)  # fmt: skip
        if relu:
            u, v, w = _col_relu(u), _col_relu(v), _col_relu(w)
        _rows_store(hid, ks, P, j0, u)
        _rows_store(hid, ks, P, j1, v)
        _rows_store(hid, ks, P, j2, w)


@njit(fastmath=FASTMATH, **KERNEL)
def _forward_dots(X, rows, m, W1T, b1p, H, hid):
    """hid[i, :H] = X[rows[i]] @ W1T[:H].T + b1p[:H] for i < m (a multiple of 4), the rest of
    each row 0: for narrow hidden layers (narrow_layer) over many inputs, dot products
    along the inputs (D a whole number of vectors) beat vectors of mostly padding units.
    Blocks of 4 rows x DOT_UNITS units, each loaded input vector used against DOT_UNITS
    weight vectors; where H runs out a block repeats its last unit (the same value twice)."""
    D = X.shape[1]
    P = hid.shape[1]
    W = lanes(X)
    for b in range(0, m, 4):
        r = rows[b], rows[b + 1], rows[b + 2], rows[b + 3]
        for j0 in range(0, H, DOT_UNITS):
            js = j0, min(j0 + 1, H - 1), min(j0 + 2, H - 1), min(j0 + 3, H - 1)
            u = v = w = z = _col_splat(vsplat(X.dtype.type(0)))
            for d in range(0, D, W):
                x = _rows_load(X, r, D, d)
                u = _col_fma(x, vload(W1T, js[0] * D + d), u)
                v = _col_fma(x, vload(W1T, js[1] * D + d), v)
                if DOT_UNITS == 4:
                    w = _col_fma(x, vload(W1T, js[2] * D + d), w)
                    z = _col_fma(x, vload(W1T, js[3] * D + d), z)
            for q in range(4):
                hid[b + q, js[0]] = b1p[js[0]] + vsum_lanes(u[q])
                hid[b + q, js[1]] = b1p[js[1]] + vsum_lanes(v[q])
                if DOT_UNITS == 4:
                    hid[b + q, js[2]] = b1p[js[2]] + vsum_lanes(w[q])
                    hid[b + q, js[3]] = b1p[js[3]] + vsum_lanes(z[q])
        for q in range(4):
            for j in range(H, P):
                hid[b + q, j] = 0


@njit(fastmath=FASTMATH, **KERNEL)
def _live_rows(dhid, H, m, rows, live):
    """The tile rows i < m with a nonzero gradient at some hidden unit, into live[0] (and
    their data rows, rows[i], into live[1]); how many. Rows of dead relu units add nothing to
    the weight gradient: a narrow layer often has no live unit left on a row."""
    n = 0
    for i in range(m):
        for j in range(H):
            if dhid[i, j] != 0:  # NaN counts as live
                live[0, n] = i
                live[1, n] = rows[i]
                n += 1
                break
    return n


@njit(fastmath=FASTMATH, **KERNEL)
def _backward_rows(dz, C, m, W2T, hid, code, dhid, gb1, keep, dropping):
    """dhid[i] = (dz[i, :C] @ W2T) * act'(hid[i]) for i < m (a multiple of 4), its column sums
    added to gb1; blocked as _forward_rows. When ``dropping``, dhid[i] = ((dz[i, :C] @ W2T) *
    keep[i]) * act'(hid[i]): keep is the dropout mask, hid the activations before it."""
    P = hid.shape[1]
    W = lanes(hid)
    one, zero = vsplat(hid.dtype.type(1)), vsplat(hid.dtype.type(0))
    triples = _one_triple(P // W)
    blocks = _blocks(P, W, triples)
    for p in range(blocks):
        j0, j1, j2, width = _block(p, P, W, triples)
        s0 = s1 = s2 = zero
        for b in range(0, m, 4):
            ks = b, b + 1, b + 2, b + 3
            u = v = w = _col_splat(zero)
            u, v, w = _rows_block(dz, ks, 0, C, W2T, P, j0, j1, j2, width, u, v, w)
            u, t0 = _col_backward(u, hid, keep, dropping, ks, P, j0, code, one)
            v, t1 = _col_backward(v, hid, keep, dropping, ks, P, j1, code, one)
            _rows_store(dhid, ks, P, j0, u)
            _rows_store(dhid, ks, P, j1, v)
            s0, s1 = vadd(s0, t0), vadd(s1, t1)
            if width == 3:
                w, t2 = _col_backward(w, hid, keep, dropping, ks, P, j2, code, one)
                _rows_store(dhid, ks, P, j2, w)
                s2 = vadd(s2, t2)
        vstore(gb1, j0, vadd(vload(gb1, j0), s0))
        if j1 != j0:
            vstore(gb1, j1, vadd(vload(gb1, j1), s1))
        if width == 3:
            vstore(gb1, j2, vadd(vload(gb1, j2), s2))


@njit(fastmath=FASTMATH, **KERNEL)
def _rank_update(A, arows, K, m, B, brows, G, init):
    """G[k] (= 0 first when init) += sum over i < m of A[arows[i], k] * B[brows[i]] for k < K:
    B (., P) and G (K, P) with P a whole number of vectors. Blocks of 4 rows of G x 2 or 3
    vectors (as _forward_rows), summed in registers over the tile; where K runs out the block
    repeats its last row (the same value stored twice)."""
    P = G.shape[1]
    W = lanes(G)
    triples = _one_triple(P // W)
    blocks = _blocks(P, W, triples)
    for k0 in range(0, K, 4):
        kb, kc, kd = min(k0 + 1, K - 1), min(k0 + 2, K - 1), min(k0 + 3, K - 1)
        ks = k0, kb, kc, kd  # repeats the last row where K runs out
        for p in range(blocks):
            j0, j1, j2, width = _block(p, P, W, triples)
            if init:
                u = v = w = _col_splat(vsplat(G.dtype.type(0)))
            else:
                u, v, w = (
                    _rows_load(G, ks, P, j0),
                    _rows_load(G, ks, P, j1),
                    _rows_load(G, ks, P, j2),
                )
            for i in range(m):
                r, o = arows[i], brows[i] * P
                x = vsplat(A[r, k0]), vsplat(A[r, kb]), vsplat(A[r, kc]), vsplat(A[r, kd])
                u = _col_fma(x, vload(B, o + j0), u)
                v = _col_fma(x, vload(B, o + j1), v)
                if width == 3:
                    w = _col_fma(x, vload(B, o + j2), w)
            _rows_store(G, ks, P, j0, u)
            _rows_store(G, ks, P, j1, v)
            if width == 3:
                _rows_store(G, ks, P, j2, w)


@njit(fastmath=FASTMATH, **KERNEL)
def _logits(hid, H, W2p, b2p, mask, m8, dz):
    """dz[i] = hid[i, :H] @ W2p[:H] + b2p + mask for i < m8 (a multiple of BLOCK), in register
    blocks of BLOCK rows x one vector of outputs."""
    CP = dz.shape[1]
    W = lanes(dz)
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


@njit(fastmath=FASTMATH, **KERNEL)
def _softmax_xent(hid, H, W2p, b2p, mask, C, y, rows, m, m8, inv_n, dz, gb2, loss, correct):
    """Logits of the tile's rows (_logits), then per row i < m softmax cross-entropy into
    loss[0] and correct[0], and dz[i] = dL/dlogits (zero for i in [m, m8)), added to gb2.
    mask is 0 for classes < C and -inf for the padding lanes."""
    CP = dz.shape[1]
    W = lanes(dz)
    f = dz.dtype.type
    _logits(hid, H, W2p, b2p, mask, m8, dz)
    loss_sum = 0.0
    product = 1.0  # of the rows' softmax denominators, each in [1, C]: one log per tile
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
        product *= total
        scale = vsplat(f(inv_n / total))
        for v in range(0, CP, W):
            vstore(dz, o + v, vmul(vload(dz, o + v), scale))
        dz[i, label] -= f(inv_n)
        for v in range(0, CP, W):
            vstore(gb2, v, vadd(vload(gb2, v), vload(dz, o + v)))
    for i in range(m, m8):
        for c in range(CP):
            dz[i, c] = 0
    loss[0] += loss_sum + math.log(product)
    correct[0] += hits


@njit(fastmath=FASTMATH, **KERNEL)
def _regression_loss(hid, H, W2p, b2p, mask, C, y, rows, m, m8, inv_n, output, target, dz, gb2,
                     loss):  # fmt: skip
    """Logits of the tile's rows (_logits), then per row i < m its loss against y[rows[i]]
    (y (., C)) into loss[0]: half the mean squared error, or with output POISSON the half
    Poisson deviance of exp(logits) (fastnn/backends/base.py's _row_losses); dz[i] =
    dL/dlogits (zero for i in [m, m8)), added to gb2. mask is 0 for outputs < C, and for the
    padding lanes 0 (squared error) or -inf (Poisson: their exponential is 0); target (CP,)
    takes each row of y, its padding lanes 0: the padding lanes of dz stay 0."""
    CP = dz.shape[1]
    W = lanes(dz)
    f = dz.dtype.type
    _logits(hid, H, W2p, b2p, mask, m8, dz)
    scale = vsplat(f(inv_n))
    half_mean = 0.5 / C
    loss_sum = 0.0
    for i in range(m):
        o = i * CP
        r = rows[i]
        for c in range(C):
            t = y[r, c]
            target[c] = t
            if output == POISSON:  # y (log(y) - z), log(y) taken as 0 where y <= 0
                loss_sum += t * ((math.log(t) if t > 0 else f(0)) - dz[i, c])
        for v in range(0, CP, W):
            z = vload(dz, o + v)
            if output == POISSON:
                d = vsub(vexp(z), vload(target, v))
                loss_sum += vsum_lanes(d)
            else:
                d = vsub(z, vload(target, v))
                loss_sum += half_mean * vsum_lanes(vmul(d, d))
            d = vmul(d, scale)
            vstore(dz, o + v, d)
            vstore(gb2, v, vadd(vload(gb2, v), d))
    for i in range(m, m8):
        for c in range(CP):
            dz[i, c] = 0
    loss[0] += loss_sum


@njit(fastmath=FASTMATH, **KERNEL)
def _activate_rows(hid, H, m, code):
    for i in range(m):
        for j in range(H):
            hid[i, j] = activate(hid[i, j], code)


def _workspace(dtype, T, S, size, HP, C, CP, narrow, output, dropping):
    """fused_steps' buffers: per tile a flat gradient of every parameter; per thread the
    tile's activations, their gradients, dL/dlogits and row numbers; the rows of a tile; per
    thread its live rows (_live_rows); per tile loss and hit counts; per thread W2 (HP, CP)
    for the logits; their padding mask (0 for the C outputs, then -inf, or 0 for the squared
    error); per thread a row of regression targets (padding lanes 0); per update chunk, the
    sum of its weights' squares (the alpha penalty); per thread, when ``dropping``, the
    tile's activations times the dropout mask, and the mask (else 0 rows each)."""
    drop_rows = SPAN if dropping else 0
    mask = _aligned((CP,), dtype)
    mask[C:] = 0 if output == OUTPUT_CODES["identity"] else -np.inf
    return (
        _aligned((TILES_PER_THREAD * S, size + PAD), dtype, zero=narrow),  # see below
        _aligned((T, SPAN, HP), dtype, zero=False),
        _aligned((T, SPAN, HP), dtype, zero=False),
        _aligned((T, SPAN, CP), dtype, zero=False),
        np.empty((T, SPAN), dtype=np.int64),
        np.arange(SPAN, dtype=np.int64),
        np.empty((T, 2, SPAN), dtype=np.int64),
        np.zeros((TILES_PER_THREAD * S, PAD)),
        np.zeros((TILES_PER_THREAD * S, PAD), dtype=np.int64),
        _aligned((T, HP, CP), dtype),
        mask,
        _aligned((T, CP), dtype),
        np.zeros(-(-size // UPDATE_CHUNK)),
        _aligned((T, drop_rows, HP), dtype, zero=False),
        _aligned((T, drop_rows, HP), dtype, zero=False),
    )  # a narrow network's tiles leave W1's padding units unwritten: their gradient stays 0


def _aligned(shape, dtype, zero=True):
    """A C-contiguous array (zeros unless not ``zero``) whose data starts on a 64-byte cache
    line, and rows of a whole number of vectors stay so: a vector load never straddles two
    lines (numpy's own large arrays start 16 bytes into a page; measured 15-30% slower
    steps at 784-256-10 and wider)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    offset = -raw.ctypes.data % ALIGN
    a = raw[offset : offset + nbytes].view(dtype).reshape(shape)
    if zero:
        a[...] = 0
    return a


@njit(**KERNEL)
def _tiles(n, most):
    """(rows per tile, a multiple of BLOCK; tiles) for a step of n rows: at most ``most``
    tiles of at least MIN_TILE rows."""
    tiles = max(1, min(-(-n // MIN_TILE), most))
    size = -(-n // tiles)
    size = -(-size // BLOCK) * BLOCK
    return size, -(-n // size)


@njit(**KERNEL)
def _views(flat, D, H, C, narrow):
    """W1 (D, HP; transposed, (HP, D), when narrow), b1 (HP,), W2 transposed (C, HP) and b2
    (CP,) as views of one flat array, hidden units and classes padded to whole vectors, in the
    order of _segments."""
    W = lanes(flat)
    HP, CP = -(-H // W) * W, -(-C // W) * W
    o1 = D * HP
    o2 = o1 + HP
    o3 = o2 + C * HP
    W1p = flat[:o1].reshape(HP, D) if narrow else flat[:o1].reshape(D, HP)
    return W1p, flat[o1:o2], flat[o2:o3].reshape(C, HP), flat[o3 : o3 + CP]


def _segments(D, HP, C, CP):
    """Where each parameter starts in the flat layout of _views, and where the last ends."""
    return np.array([0, D * HP, D * HP + HP, D * HP + HP + C * HP, D * HP + HP + C * HP + CP])


def _exchange(views, W1, b1, W2, b2, narrow, into_flat):
    """Copy the parameters (or slots) into ``views`` (_views of a flat array), or back out of
    them; nothing when they are empty."""
    if W1.size == 0:
        return
    H = W1.shape[1]
    W1p, b1p, W2T, b2p = views
    pairs = ((W1p[:H] if narrow else W1p[:, :H], W1.T if narrow else W1), (b1p[:H], b1),
             (W2T[:, :H], W2.T), (b2p[: b2.size], b2))  # fmt: skip
    for padded, a in pairs:
        if into_flat:
            padded[...] = a
        else:
            a[...] = padded


@njit(**KERNEL)
def _transpose_into(W2p, W2T, H, C):
    """W2p[:H, :C] = W2T[:C, :H].T: the logits' copy of W2 after each update."""
    for j in range(H):
        for c in range(C):
            W2p[j, c] = W2T[c, j]


def narrow_layer(D: int, H: int, dtype) -> bool:
    """Whether fused_steps takes _forward_dots for a D -> H layer: few units over many inputs,
    D a whole number of vectors."""
    W = BYTES // np.dtype(dtype).itemsize
    return H <= NARROW_VECTORS * W and D % W == 0 and D >= NARROW_INPUTS * H


def fused_batches(
    X, y, index, use_index, start, stop, batch, W1, b1, W2, b2, code, output, adam, rates,
    momentum, nesterov, use_velocity, beta1, beta2, eps, weight_decay, alpha, dropout, seed,
    step, s1, s2, s3, s4, q1, q2, q3, q4, T, S,
):  # fmt: skip
    """See the module's docstring: the parameters and their optimizer slots as flat, padded
    working copies (_views), buffers for fused_steps, and the results copied back. Plain
    numpy, so that only the steps themselves are compiled."""
    steps = -(-(stop - start) // batch)
    rates = np.ascontiguousarray(rates, dtype=np.float64)
    if rates.shape != (steps,):
        raise ValueError(f"fused_batches needs {steps} learning rates, got {rates.shape}")
    dropping = dropout > 0
    D, H = W1.shape
    C = W2.shape[1]
    W = BYTES // W1.itemsize
    HP, CP = -(-H // W) * W, -(-C // W) * W
    narrow = narrow_layer(D, H, W1.dtype)
    slots = ((W1, b1, W2, b2), (s1, s2, s3, s4), (q1, q2, q3, q4))
    used = tuple(bool(p[0].size) for p in slots)
    segments, flats, views, work = _buffers(W1.dtype, T, S, D, H, C, HP, CP, narrow, used,
                                            output, dropping)  # fmt: skip
    for flat, v, params in zip(flats, views, slots, strict=True):
        flat[...] = 0  # the padding too: a diverged call may have left NaN there
        _exchange(v, *params, narrow, True)
    theta, theta_s, theta_q = flats
    loss_t, correct_t, penalty = work[7], work[8], work[12]
    loss_t[...] = 0
    correct_t[...] = 0
    penalty[...] = 0
    sync = np.zeros((steps * 4 + 1) * SYNC, dtype=np.int64)
    # the hash's threshold and scale as fastnn.dropout's keep_mask takes them, the seed modulo
    # 2**32 as its mix32 does
    least, scale = (threshold(dropout), keep_scale(dropout)) if dropping else (0, 1.0)
    args = (X, y, index, use_index, start, stop, batch, theta, theta_s, theta_q, segments, D, H,
            C, narrow, code, output, adam, rates, momentum, nesterov, use_velocity, beta1, beta2,
            eps, weight_decay, alpha, dropping, seed & MASK32, least, scale, step)  # fmt: skip
    errors = []

    def failed(e):  # a helper's exception: the other threads stop waiting for it
        errors.append(e)
        sync[-SYNC] = 1

    try:
        if T == 1:
            step = fused_steps(*args, 0, T, S, work, sync, sync, 0)  # thread 0: no board
        else:
            step = team(S - 1).run(
                T, lambda t, board, job: fused_steps(*args, t, T, S, work, sync, board, job), failed
            )
    except BaseException:
        sync[-SYNC] = 1
        raise
    if errors:
        raise RuntimeError("a thread of the fused training kernel failed") from errors[0]
    for v, params in zip(views, slots, strict=True):
        _exchange(v, *params, narrow, False)
    loss_sum = sum(loss_t[:, 0].tolist()) + 0.5 * alpha * sum(penalty.tolist())
    return loss_sum, int(correct_t[:, 0].sum()), step


_kept = threading.local()  # per thread: the key and buffers of its last call, when small
KEEP_BYTES = 1 << 22


def _buffers(dtype, T, S, D, H, C, HP, CP, narrow, used, output, dropping):
    """(segments, flat padded arrays for the parameters and the two optimizer slots (empty
    where not ``used``), their _views, _workspace): new, or this thread's from its previous
    call of the same shapes where they take at most KEEP_BYTES. A short call (a digits
    epoch: 8 steps in 0.3 ms) spent a fifth of its time allocating them."""
    key = (np.dtype(dtype), T, S, D, H, C, narrow, used, output, dropping)
    kept = getattr(_kept, "last", None)
    if kept is not None and kept[0] == key:
        return kept[1]
    segments = _segments(D, HP, C, CP)
    size = int(segments[4])
    flats = tuple(_aligned((size if u else 0,), dtype) for u in used)
    views = tuple(_views(f, D, H, C, narrow) if f.size else () for f in flats)
    work = _workspace(dtype, T, S, size, HP, C, CP, narrow, output, dropping)
    buffers = segments, flats, views, work
    nbytes = sum(a.nbytes for a in (*flats, *work))
    _kept.last = (key, buffers) if nbytes <= KEEP_BYTES else None
    return buffers


@njit(fastmath=FASTMATH, **KERNEL)
def _wait(sync, i, target):
    """Wait until sync[i] reaches target; False if a thread failed (the last counter of sync)
    meanwhile. After SPINS reads the waiting thread yields its core at each read: on a busy
    machine another process's thread may need it, perhaps the one this thread waits for."""
    spins = 0
    failed = sync.size - SYNC
    while load(sync, i) < target:
        if load(sync, failed):
            return False
        spins += 1
        if spins >= SPINS:
            yield_core()
    return True


@njit(nogil=True, fastmath=FASTMATH, **KERNEL)
def fused_steps(
    X, y, index, use_index, start, stop, batch, theta, theta_s, theta_q, segments, D, H, C,
    narrow, code, output, adam, rates, momentum, nesterov, use_velocity, beta1, beta2, eps,
    weight_decay, alpha, dropping, seed, least, scale, step, t, T, S, work, sync, board, job,
):  # fmt: skip
    """Thread t of the T that run the steps of fused_batches together (kernels/team.py: job
    ``job`` of its ``board``, where a helper lingers at the end) on its flat
    parameters, slots and buffers (``work``, from _workspace); the step counter after the last
    step. The k-th step of the call updates at rates[k]; with ``dropping``, its masks are
    dropout_rows' of the layer key of (``seed`` modulo 2**32, its step number), keeping the
    units whose hash is at least ``least``, scaled by ``scale``. Each step the threads claim
    its tiles one at a time (sync: four counters a step), wait until every tile is done,
    claim chunks of the parameters to sum the tiles' gradients over and update, and wait
    until every chunk is. Work is claimed, never assigned, so a thread that starts late (a
    helper thread waking up) takes what is left and holds nobody up. A plain function on
    threads of fastnn's own rather than numba's parallel loops: numba's parfor passes more
    than doubled the compile time (7.5 s serial, 14.2 s with prange, on a 2-core Zen 4)."""
    slots = adam or use_velocity
    size = segments[4]
    W1p, b1p, W2T, b2p = _views(theta, D, H, C, narrow)
    HP, CP = b1p.size, b2p.size
    grad, hid, dhid, dz, rows, tile_rows, live, loss_t, correct_t, W2ps, mask, targets = work[:12]
    penalty = work[12]  # per update chunk: its weights' squares, summed over the steps
    hid_kept, keep = work[13], work[14]  # dropout: hid times the mask, and the mask
    W2p = W2ps[t]
    _transpose_into(W2p, W2T, H, C)
    most = max(S, min(TILES_PER_THREAD * S, PARTIAL_BYTES // (size * theta.itemsize)))
    chunks = -(-size // UPDATE_CHUNK)
    for b_start in range(start, stop, batch):
        n = min(batch, stop - b_start)
        inv_n = 1.0 / n
        tsize, tiles = _tiles(n, most)
        number = (b_start - start) // batch  # of the step in this call
        counters = number * 4 * SYNC
        key = layer_key(seed, step, 0)  # the hidden layer's dropout masks in this step
        while True:  # claim the next tile
            k = fetch_add(sync, counters + CLAIMED, 1)
            if k >= tiles:
                break
            gW1, gb1, gW2, gb2 = _views(grad[k], D, H, C, narrow)
            for j in range(HP):
                gb1[j] = 0
            for c in range(CP):
                gb2[c] = 0
            first, last = b_start + k * tsize, min(b_start + (k + 1) * tsize, b_start + n)
            for s0 in range(first, last, SPAN):
                m = min(SPAN, last - s0)
                m8 = (m + BLOCK - 1) // BLOCK * BLOCK
                for i in range(m8):  # a short last block repeats the last row, unused
                    r = s0 + min(i, m - 1)
                    rows[t, i] = index[r] if use_index else r
                if narrow:
                    _forward_dots(X, rows[t], m8, W1p, b1p, H, hid[t])
                else:
                    _forward_rows(X, rows[t], m8, W1p, b1p, code == RELU, hid[t])
                if narrow or (code != RELU and code != IDENTITY):
                    _activate_rows(hid[t], H, m8, code)
                seen = hid[t]  # what the output layer sees: hid, or hid times the mask
                if dropping:  # by the rows' places in the minibatch, s0 - b_start on
                    dropout_rows(hid[t], m8, H, s0 - b_start, key, least, scale, hid_kept[t],
                                 keep[t])  # fmt: skip
                    seen = hid_kept[t]
                if y.ndim == 1:  # labels; numba compiles only the branch of y's rank
                    _softmax_xent(seen, H, W2p, b2p, mask, C, y, rows[t], m, m8, inv_n,
                                  dz[t], gb2, loss_t[k], correct_t[k])  # fmt: skip
                else:
                    _regression_loss(seen, H, W2p, b2p, mask, C, y, rows[t], m, m8, inv_n,
                                     output, targets[t], dz[t], gb2, loss_t[k])  # fmt: skip
                _rank_update(dz[t], tile_rows, C, m8, seen, tile_rows, gW2, s0 == first)
                _backward_rows(dz[t], C, m8, W2T, hid[t], code, dhid[t], gb1, keep[t],
                               dropping)  # fmt: skip
                if narrow:  # gW1 is (HP, D): a unit's gradient is a sum of input rows
                    n_live = _live_rows(dhid[t], H, m8, rows[t], live[t])
                    _rank_update(dhid[t], live[t, 0], H, n_live, X, live[t, 1], gW1,
                                 s0 == first)  # fmt: skip
                else:
                    _rank_update(X, rows[t], D, m8, dhid[t], tile_rows, gW1, s0 == first)
            fetch_add(sync, counters + DONE, 1)
        if not _wait(sync, counters + DONE, tiles):
            return step
        step += 1
        c1 = 1 - beta1**step
        c2 = 1 - beta2**step
        while True:  # claim the next chunk to update
            q = fetch_add(sync, counters + UPDATE_CLAIMED, 1)
            if q >= chunks:
                break
            lo, hi = q * UPDATE_CHUNK, min((q + 1) * UPDATE_CHUNK, size)
            g = grad[0, lo:hi]  # sum the tiles' gradients in order, then update; views
            for u in range(1, tiles):  # from 0: see update_span
                gu = grad[u, lo:hi]
                for e in range(hi - lo):
                    g[e] += gu[e]
            for p in range(4):  # the chunk's part of each parameter; biases without decay
                a, b = max(lo, segments[p]), min(hi, segments[p + 1])
                decay = weight_decay + alpha * inv_n if p % 2 == 0 else 0.0
                if alpha and p % 2 == 0 and a < b:
                    weights = theta[a:b]  # a view from 0: see update_span
                    squares = 0.0
                    for e in range(b - a):
                        squares += weights[e] * weights[e]
                    penalty[q] += squares
                if a < b:
                    update_span(theta, grad[0], theta_s if slots else theta,
                                theta_q if adam else theta, a, b, adam, rates[number],
                                momentum, nesterov, use_velocity, beta1, beta2, eps, decay, c1,
                                c2)  # fmt: skip
            fetch_add(sync, counters + UPDATED, 1)
        if not _wait(sync, counters + UPDATED, chunks):
            return step
        _transpose_into(W2p, W2T, H, C)  # a late thread's copy may mix steps: it takes no
    if t > 0:  # tile of a step whose tiles were all claimed before its copy
        linger(board, job)
    return step
