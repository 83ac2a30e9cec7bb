// Epilogues of the dense layer around cuBLAS products (CuPy's matmul).
//
// bias_act(z_nm, b_m, n, m, code): z = act(z + b) in place, one pass over the (n, m) output.
// act_grad(dy, y, dz, size, code): dz = dy * act'(from the output y), elementwise.
// Grid-stride loops: any launch shape covers any size.
#include "common.cuh"

template <typename T>
__global__ void bias_act(T* z_nm, const T* b_m, long long n, long long m, int code) {
    const long long size = n * m;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        z_nm[i] = activate(z_nm[i] + b_m[i % m], code);
    }
}

template <typename T>
__global__ void act_grad(const T* dy, const T* y, T* dz, long long size, int code) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        dz[i] = dy[i] * derivative_from_output(y[i], code);
    }
}

template __global__ void bias_act<float>(float*, const float*, long long, long long, int);
template __global__ void bias_act<double>(double*, const double*, long long, long long, int);
template __global__ void act_grad<float>(const float*, const float*, float*, long long, int);
template __global__ void act_grad<double>(const double*, const double*, double*, long long, int);
