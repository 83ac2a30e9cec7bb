"""kernels/simd.py: the vector intrinsics the fused kernel is built from, against numpy."""

import numpy as np
import pytest
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
from fastnn.kernels.target import VECTOR_BYTES
from numba import njit
from numba.core.errors import TypingError

DTYPES = [np.float32, np.float64]


@njit
def _map_exp(x, out):
    for i in range(0, x.size, lanes(x)):
        vstore(out, i, vexp(vload(x, i)))


@njit
def _arithmetic(a, b, c, out):
    """out rows: a*b+c, a+b, a-b, a*b, max(a, b), 2 broadcast, from offset 1 (unaligned)."""
    va, vb, vc = vload(a, 1), vload(b, 1), vload(c, 1)
    n = lanes(a)
    vstore(out, 0, vfma(va, vb, vc))
    vstore(out, n, vadd(va, vb))
    vstore(out, 2 * n, vsub(va, vb))
    vstore(out, 3 * n, vmul(va, vb))
    vstore(out, 4 * n, vmaximum(va, vb))
    vstore(out, 5 * n, vsplat(a[0]))


@njit
def _reductions(a, x):
    v = vload(a, 0)
    return vsum_lanes(v), vmax_lanes(v), vfirst_equal(v, x)


def _vector(dtype, values):
    """values, repeated to fill whole vectors (one, or more where there are more values)."""
    n = VECTOR_BYTES // np.dtype(dtype).itemsize
    return np.resize(np.asarray(values, dtype=dtype), -(-len(values) // n) * n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_fill_the_targets_vector_register(dtype):
    a = np.zeros(3, dtype=dtype)
    assert njit(lambda a: lanes(a))(a) * a.itemsize == VECTOR_BYTES in (16, 32, 64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_is_within_two_ulp_of_numpy(dtype):
    info = np.finfo(dtype)
    lo, hi = np.log(info.tiny) * 0.999, np.log(info.max) - 1
    x = np.concatenate([np.linspace(lo, hi, 200_000), -np.geomspace(1e-30, 1, 1000), [0.0]])
    x = np.resize(x, -(-x.size // 16) * 16).astype(dtype)
    out = np.empty_like(x)
    _map_exp(x, out)
    exact = np.exp(x.astype(np.longdouble))
    ulps = np.abs(out - exact) / np.spacing(exact.astype(dtype)).astype(np.longdouble)
    assert float(ulps.max()) <= 2, float(ulps.max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_edges_nan_and_underflow(dtype):
    info = np.finfo(dtype)
    x = _vector(dtype, [np.nan, -np.inf, np.log(info.tiny) - 1, -1e30, 0.0, -0.0, 1.0, -1.0])
    out = np.empty_like(x)
    _map_exp(x, out)
    assert np.isnan(out[0])
    assert out[1] == out[2] == out[3] == 0
    assert out[4] == out[5] == 1
    np.testing.assert_allclose(out[6:8], np.exp(x[6:8]), rtol=4 * info.eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_arithmetic_lane_by_lane(dtype, rng):
    n = VECTOR_BYTES // np.dtype(dtype).itemsize
    a, b, c = (rng.normal(size=n + 1).astype(dtype) for _ in range(3))
    b[n] = np.nan  # the last lane read
    out = np.empty(6 * n, dtype=dtype)
    _arithmetic(a, b, c, out)
    va, vb, vc = a[1:], b[1:], c[1:]
    rows = out.reshape(6, n)
    np.testing.assert_allclose(rows[0], va * vb + vc, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(rows[1], va + vb)
    np.testing.assert_array_equal(rows[2], va - vb)
    np.testing.assert_array_equal(rows[3], va * vb)
    np.testing.assert_array_equal(rows[4], np.maximum(va, vb))  # NaN where b is NaN
    np.testing.assert_array_equal(rows[5], np.full(n, a[0]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_and_first_equal_lane(dtype):
    a = _vector(dtype, [3, 7, 1, 7, 2])[: VECTOR_BYTES // np.dtype(dtype).itemsize]  # one
    total, top, first = _reductions(a, a.dtype.type(7))
    assert total == pytest.approx(float(a.sum()))
    assert top == 7
    assert first == 1  # the first of the ties, as argmax
    assert _reductions(a, a.dtype.type(5))[2] == a.size  # absent: one past the last lane
    a[-1] = np.nan
    assert np.isnan(_reductions(a, a.dtype.type(7))[1])


def test_loads_refuse_arrays_that_are_not_c_contiguous():
    strided = np.zeros((32, 2), dtype=np.float32)[:, 0]
    with pytest.raises(TypingError, match="C-contiguous"):
        njit(lambda a: vsum_lanes(vload(a, 0)))(strided)
