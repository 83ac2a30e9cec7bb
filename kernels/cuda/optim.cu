// Optimizer updates, one pass per parameter, in place (the formulas of fastnn/backends/base.py).
//
// sgd(p, g, v, size, lr, momentum, weight_decay, use_velocity, nesterov): scikit-learn's SGD
//   with (Nesterov) momentum, the velocity holding the learning rate; v is unused when
//   use_velocity is 0.
// adam(p, g, m, v, size, step, beta1, beta2, eps, weight_decay): scikit-learn's Adam, whose
//   step = lr * sqrt(1 - beta2 ** t) / (1 - beta1 ** t) holds the bias corrections and whose
//   epsilon is added to sqrt(v).
template <typename T>
__global__ void sgd(T* p, const T* g, T* v, long long size, T lr, T momentum, T weight_decay,
                    int use_velocity, int nesterov) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        const T grad = g[i] + weight_decay * p[i];
        if (use_velocity) {
            const T vel = v[i] * momentum - lr * grad;
            v[i] = vel;
            p[i] += nesterov ? momentum * vel - lr * grad : vel;
        } else {
            p[i] -= lr * grad;
        }
    }
}

template <typename T>
__global__ void adam(T* p, const T* g, T* m, T* v, long long size, T step, T beta1, T beta2,
                     T eps, T weight_decay) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        const T grad = g[i] + weight_decay * p[i];
        const T mi = m[i] * beta1 + (T(1) - beta1) * grad;
        const T vi = v[i] * beta2 + (T(1) - beta2) * (grad * grad);
        m[i] = mi;
        v[i] = vi;
        p[i] -= step * mi / (sqrt(vi) + eps);
    }
}

template __global__ void sgd<float>(float*, const float*, float*, long long, float, float, float,
                                    int, int);
template __global__ void sgd<double>(double*, const double*, double*, long long, double, double,
                                     double, int, int);
template __global__ void adam<float>(float*, const float*, float*, float*, long long, float, float,
                                     float, float, float);
template __global__ void adam<double>(double*, const double*, double*, double*, long long, double,
                                      double, double, double, double);
