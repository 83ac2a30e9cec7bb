"""Dropout masks drawn by fastnn/dropout.py's counter-based hash, in numba.

``dropout_(h, seed, step, layer, threshold, scale, out, mask)``: h (n, m) is hidden layer
``layer``'s output in training step ``step``; writes mask (n, m) := ``scale`` where the unit is
kept, 0 where it is dropped, and out (n, m) := h * mask (a multiply: NaN * 0 stays NaN, as
numpy's). ``seed`` and ``step`` are non-negative integers, taken modulo 2**32 as
fastnn.dropout takes them (NumbaBackend.dropout passes them so reduced), ``threshold`` is
fastnn.dropout.threshold(rate) and ``scale`` 1 / (1 - rate) as a float64, rounded to h's dtype
here as fastnn.dropout rounds it. Row i of h is row i of its minibatch.

``dropout_rows`` is the one implementation of the mask (step.py's fused kernel applies it to
the rows of a tile: ``first``, the minibatch position of the tile's first row, and padding
units), ``layer_key`` the one of the keys. The hash's constants are copied here from
fastnn/dropout.py rather than imported: numba freezes a global into the compiled code, and
its on-disk cache is stamped with the kernels' sources only (cache.py), so a constant changed
there would not recompile the kernels. tests/test_backend_equivalence.py checks both against
fastnn.dropout, bit for bit.

numba types arithmetic on uint32 values as int64, where a product of two 32-bit values can
overflow; every value here is a uint64 below 2**32 and every product is masked back to 32
bits. LLVM vectorises the loop over units in 64-bit lanes all the same (it does not narrow
the products): about 0.4 ns an element on AVX-512 and 0.7 ns on AVX2 (a 256 x 256 mask, 2-core
Zen 4), a percent or two of a fused 784-128-10 step, against 4.5 ns in numpy's keep_mask.
"""

import numpy as np
from fastnn.kernels.activations import KERNEL
from numba import njit

U64 = np.uint64
MASK32 = U64(0xFFFFFFFF)
MIX1, MIX2 = U64(0x7FEB352D), U64(0x846CA68B)  # fastnn.dropout's (lowbias32's multipliers)
SEED_SALT = U64(0x9E3779B9)  # fastnn.dropout's
SHIFT15, SHIFT16 = U64(15), U64(16)


@njit(**KERNEL)
def mix32(x):
    """lowbias32 of x's low 32 bits (any integer), as a uint64 below 2**32."""
    x = U64(x) & MASK32
    x ^= x >> SHIFT16
    x = (x * MIX1) & MASK32
    x ^= x >> SHIFT15
    x = (x * MIX2) & MASK32
    return x ^ (x >> SHIFT16)


@njit(**KERNEL)
def layer_key(seed, step, layer):
    """fastnn.dropout.layer_key of seed and step modulo 2**32."""
    return mix32(mix32(mix32(U64(seed) ^ SEED_SALT) ^ (U64(step) & MASK32)) ^ U64(layer))


@njit(**KERNEL)
def dropout_rows(h, n, units, first, key, threshold, scale, out, mask):
    """For rows i < n of h (., P), at minibatch positions first + i: mask[i, j] := scale
    where unit j < units is kept by the layer's ``key``, else 0, out[i, j] := h[i, j] *
    mask[i, j]; out and mask 0 for j in [units, P) (padding). out and mask are (., P) of h's
    dtype."""
    P = h.shape[1]
    f = h.dtype.type
    keep, drop = f(scale), f(0)
    least = U64(threshold)
    for i in range(n):
        row_key = mix32(U64(first + i) ^ key)
        hi, oi, mi = h[i], out[i], mask[i]
        for j in range(units):
            m = keep if mix32(row_key ^ U64(j)) >= least else drop
            mi[j] = m
            oi[j] = hi[j] * m
        for j in range(units, P):
            mi[j] = drop
            oi[j] = drop


@njit(**KERNEL)
def dropout_(h, seed, step, layer, threshold, scale, out, mask):
    dropout_rows(h, h.shape[0], h.shape[1], 0, layer_key(seed, step, layer), threshold, scale,
                 out, mask)  # fmt: skip
