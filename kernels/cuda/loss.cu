// Softmax cross-entropy, loss and gradient in one pass: one warp per row of logits (n, c).
//
// softmax_xent(logits_nc, y_n, dlogits_nc, loss_n, n, c, inv_n): loss_n[i] is row i's
//   cross-entropy, dlogits = (softmax - onehot(y)) * inv_n; stable for any finite logits
//   (row maximum subtracted before exp, log-sum-exp), no one-hot matrix.
// softmax(logits_nc, out_nc, n, c): row-wise probabilities.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void row_max_sum(const T* row, int c, int lane, T* top, T* total) {
    T m = row[0];  // c >= 1; no INFINITY macro under NVRTC
    for (int j = lane; j < c; j += 32) m = max(m, row[j]);
    m = warp_max(m);
    T s = T(0);
    for (int j = lane; j < c; j += 32) s += exp(row[j] - m);
    *top = m;
    *total = warp_sum(s);
}

template <typename T>
__global__ void softmax_xent(const T* logits_nc, const long long* y_n, T* dlogits_nc, T* loss_n,
                             long long n, int c, T inv_n) {
    const int lane = threadIdx.x % 32;
    const long long warps = (long long)gridDim.x * (blockDim.x / 32);
    for (long long i = blockIdx.x * (long long)(blockDim.x / 32) + threadIdx.x / 32; i < n;
         i += warps) {
        const T* row = logits_nc + i * c;
        T top, total;
        row_max_sum(row, c, lane, &top, &total);
        const long long label = y_n[i];
        for (int j = lane; j < c; j += 32) {
            T d = exp(row[j] - top) / total * inv_n;
            dlogits_nc[i * c + j] = j == label ? d - inv_n : d;
        }
        if (lane == 0) loss_n[i] = log(total) - (row[label] - top);
    }
}

template <typename T>
__global__ void softmax(const T* logits_nc, T* out_nc, long long n, int c) {
    const int lane = threadIdx.x % 32;
    const long long warps = (long long)gridDim.x * (blockDim.x / 32);
    for (long long i = blockIdx.x * (long long)(blockDim.x / 32) + threadIdx.x / 32; i < n;
         i += warps) {
        const T* row = logits_nc + i * c;
        T top, total;
        row_max_sum(row, c, lane, &top, &total);
        for (int j = lane; j < c; j += 32) out_nc[i * c + j] = exp(row[j] - top) / total;
    }
}

template __global__ void softmax_xent<float>(const float*, const long long*, float*, float*,
                                             long long, int, float);
template __global__ void softmax_xent<double>(const double*, const long long*, double*, double*,
                                              long long, int, double);
template __global__ void softmax<float>(const float*, float*, long long, int);
template __global__ void softmax<double>(const double*, double*, long long, int);
