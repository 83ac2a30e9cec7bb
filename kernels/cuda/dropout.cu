// Inverted dropout of a hidden layer's output, mask and masked output in one pass.
//
// dropout(h_nm, out_nm, mask_nm, n, m, key, threshold, scale): for row i and unit j of the
//   (n, m) output h, mask = scale where dropout_bits(key, i, j) >= threshold, else 0
//   (common.cuh's dropout_at, the rule of fastnn/dropout.py's keep_mask), and out = h * mask:
//   a product, so a NaN in h stays NaN where its unit is dropped, as in numpy. key, threshold
//   and scale come from the host (layer_key, threshold, 1 / (1 - rate) rounded to T).
// Grid-stride loop: any launch shape covers any size.
#include "common.cuh"

template <typename T>
__global__ void dropout(const T* h_nm, T* out_nm, T* mask_nm, long long n, long long m,
                        unsigned int key, unsigned int threshold, T scale) {
    const long long size = n * m;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        const T mask = dropout_at(i, m, key, threshold, scale);
        mask_nm[i] = mask;
        out_nm[i] = h_nm[i] * mask;
    }
}

template __global__ void dropout<float>(const float*, float*, float*, long long, long long,
                                        unsigned int, unsigned int, float);
template __global__ void dropout<double>(const double*, double*, double*, long long, long long,
                                         unsigned int, unsigned int, double);
