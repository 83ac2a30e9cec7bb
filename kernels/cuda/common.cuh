// Shared device helpers of fastnn's CUDA kernels: activation codes (as in
// kernels/activations.py: relu 0, tanh 1, sigmoid 2, identity 3) and warp reductions.
// Included textually by each .cu file, which CuPy compiles with NVRTC (no system headers).
#pragma once

template <typename T>
__device__ __forceinline__ T activate(T z, int code) {
    if (code == 0) return z > T(0) ? z : T(0);
    if (code == 1) return tanh(z);
    if (code == 2) return T(1) / (T(1) + exp(-z));
    return z;
}

// The derivative from the activation's output y, as the reference backend computes it.
template <typename T>
__device__ __forceinline__ T derivative_from_output(T y, int code) {
    if (code == 0) return y > T(0) ? T(1) : T(0);
    if (code == 1) return T(1) - y * y;
    if (code == 2) return y * (T(1) - y);
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
