// Shared helpers of fastnn's CUDA kernels: activation codes (as in kernels/activations.py),
// warp reductions, and dropout's counter-based hash (as in fastnn/dropout.py).
// Included by the .cu files; the cupy backend pastes this text in place of the #include line
// before CuPy compiles the source with NVRTC (no system headers), so that an edit here
// changes CuPy's cache key. The __host__ __device__ functions also compile into host programs
// (tests/test_cuda.py checks them on the CPU against numpy).
#pragma once

// Activation codes: fastnn/backends/cupy.py's ACTIVATION_CODES and kernels/activations.py's.
enum ActivationCode : int { RELU = 0, TANH = 1, SIGMOID = 2, IDENTITY = 3 };

// relu keeps NaN (numpy's maximum(z, 0) does) and maps -inf to 0: a diverging run's NaN must
// reach the loss, as on the other backends.
template <typename T>
__host__ __device__ __forceinline__ T activate(T z, int code) {
    if (code == RELU) return (z > T(0) || z != z) ? z : T(0);
    if (code == TANH) return tanh(z);
    if (code == SIGMOID) return T(1) / (T(1) + exp(-z));
    return z;
}

// The derivative from the activation's output y, as the reference backend computes it.
template <typename T>
__host__ __device__ __forceinline__ T derivative_from_output(T y, int code) {
    if (code == RELU) return y > T(0) ? T(1) : T(0);
    if (code == TANH) return T(1) - y * y;
    if (code == SIGMOID) return y * (T(1) - y);
    return T(1);
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Dropout (fastnn/dropout.py): mix32 is Chris Wellons' lowbias32 on 32-bit values (products
// wrap); a unit's bits are mix32(mix32(row ^ key) ^ unit), where key = layer_key(seed, step,
// layer) is computed on the host; the unit is kept, scaled by 1 / (1 - rate) rounded to T,
// when its bits are at least threshold(rate), else it is 0.
__host__ __device__ __forceinline__ unsigned int mix32(unsigned int x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

__host__ __device__ __forceinline__ unsigned int dropout_bits(unsigned int key, unsigned int row,
                                                              unsigned int unit) {
    return mix32(mix32(row ^ key) ^ unit);
}

template <typename T>
__host__ __device__ __forceinline__ T dropout_mask(unsigned int bits, unsigned int threshold,
                                                   T scale) {
    return bits >= threshold ? scale : T(0);
}

// The mask of element i of a C-ordered (n, m) layer output: row i / m, unit i % m.
template <typename T>
__host__ __device__ __forceinline__ T dropout_at(long long i, long long m, unsigned int key,
                                                 unsigned int threshold, T scale) {
    return dropout_mask(dropout_bits(key, (unsigned int)(i / m), (unsigned int)(i % m)),
                        threshold, scale);
}
