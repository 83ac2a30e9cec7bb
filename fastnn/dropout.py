"""Dropout masks from a counter-based hash, so that every backend draws the same masks.

A hidden unit of a training step is kept or dropped by a 32-bit hash of (seed, step, layer,
row, unit): ``step`` is the optimizer's update count before the step (from 0), ``layer`` the
hidden layer (from 0), ``row`` the row's place in the minibatch and ``unit`` the unit's. No
generator state is carried, so numpy, the numba kernels and CUDA (kernels/cuda/common.cuh)
compute identical masks, in any order and on any thread, and a resumed run draws what the
uninterrupted run would have. The hash is ``mix32``, Chris Wellons' "lowbias32" integer
finaliser; keys chain it: ``row_key = mix32(layer_key(seed, step, layer) ^ row)``, then the
unit's bits are ``mix32(row_key ^ unit)``. Steps count modulo 2**32.

Inverted dropout: a kept unit is scaled by 1 / (1 - rate) (rounded to the dtype), a dropped
one is 0, so nothing changes at inference. A unit is kept when its bits are at least
``threshold(rate)`` = floor(rate * 2**32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MASK32 = 0xFFFFFFFF
MIX1, MIX2 = 0x7FEB352D, 0x846CA68B  # lowbias32's multipliers
SEED_SALT = 0x9E3779B9  # so that seed 0 does not start from the hash's fixed point 0


def mix32(x: int) -> int:
    """lowbias32 of a 32-bit value (a Python int)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * MIX1) & MASK32
    x ^= x >> 15
    x = (x * MIX2) & MASK32
    return x ^ (x >> 16)


def mix32_array(x: Any) -> Any:
    """lowbias32 of every element of a uint32 array (numpy or cupy; products wrap)."""
    x = x ^ (x >> 16)
    x = x * x.dtype.type(MIX1)
    x = x ^ (x >> 15)
    x = x * x.dtype.type(MIX2)
    return x ^ (x >> 16)


def layer_key(seed: int, step: int, layer: int) -> int:
    """The key of one hidden layer's masks in one training step."""
    return mix32(mix32(mix32(seed ^ SEED_SALT) ^ (step & MASK32)) ^ layer)


def threshold(rate: float) -> int:
    """The least 32-bit value of a kept unit: about ``rate`` of all values are below it."""
    return min(int(rate * 2.0**32), MASK32)


def keep_scale(rate: float) -> float:
    """A kept unit's factor, 1 / (1 - rate), in float64: each backend rounds it to its dtype."""
    return 1.0 / (1.0 - rate)


def keep_mask(xp: Any, seed: int, step: int, layer: int, shape: tuple[int, int], rate: float,
              dtype: Any) -> Any:  # fmt: skip
    """The (rows, units) mask of one hidden layer in one step, on array module ``xp``: 1 / (1
    - rate) where the unit is kept, 0 where it is dropped."""
    rows = xp.arange(shape[0], dtype=xp.uint32) ^ xp.uint32(layer_key(seed, step, layer))
    units = xp.arange(shape[1], dtype=xp.uint32)
    bits = mix32_array(mix32_array(rows)[:, None] ^ units[None, :])
    scale = np.dtype(dtype).type(keep_scale(rate))
    return xp.where(bits >= xp.uint32(threshold(rate)), scale, np.dtype(dtype).type(0))
