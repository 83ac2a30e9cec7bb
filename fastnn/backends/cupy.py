"""The cupy backend: the reference maths on a CUDA GPU, with fused kernels (kernels/cuda/).

Matrix products go to cuBLAS through CuPy; bias + activation, the activation derivative,
softmax cross-entropy and the optimizer updates are one kernel launch each. Data stays on the
device: the trainer uploads X and y once, minibatches are gathered on the device by index, and
loss and accuracy accumulate on the device until the epoch reads them once.
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from typing import Any

import cupy
import numpy

from fastnn.backends.base import Backend
from fastnn.kernels.activations import ACTIVATION_CODES

THREADS = 256  # threads per block of the elementwise and row kernels
MAX_BLOCKS = 4096  # grid-stride loops cover the rest
_C_TYPES = {"float32": "float", "float64": "double"}
KERNELS = {
    "linear.cu": ("bias_act", "act_grad"),
    "loss.cu": ("softmax_xent", "softmax"),
    "optim.cu": ("sgd", "adam"),
}


@functools.cache
def kernel(name: str, dtype: str) -> Any:
    """The compiled kernel ``name`` for float32 or float64 (compiled once per process)."""
    source = next(f for f, names in KERNELS.items() if name in names)
    return _module(source).get_function(f"{name}<{_C_TYPES[dtype]}>")


@functools.cache
def _module(source: str) -> Any:
    folder = resources.files("fastnn.kernels") / "cuda"
    names = [f"{k}<{t}>" for k in KERNELS[source] for t in _C_TYPES.values()]
    return cupy.RawModule(
        code=(folder / source).read_text(),
        options=("-std=c++17", f"-I{folder}"),
        name_expressions=names,
    )


def _grid(size: int, per_block: int = THREADS) -> tuple[int]:
    return (max(1, min(MAX_BLOCKS, -(-size // per_block))),)


class CupyBackend(Backend):
    name = "cupy"
    xp = cupy

    def to_numpy(self, a: Any) -> numpy.ndarray:
        return cupy.asnumpy(a)

    def synchronize(self) -> None:
        cupy.cuda.get_current_stream().synchronize()

    def linear(self, x: Any, W: Any, b: Any, activation: str) -> Any:
        z = cupy.ascontiguousarray(x) @ W
        n, m = z.shape
        kernel("bias_act", z.dtype.name)(
            _grid(z.size), (THREADS,), (z, b, n, m, numpy.int32(ACTIVATION_CODES[activation]))
        )
        return z

    def linear_backward(
        self, dy: Any, x: Any, W: Any, y: Any, activation: str, need_dx: bool
    ) -> tuple[Any | None, Any, Any]:
        dz = dy
        if activation != "identity":
            dz = cupy.empty_like(dy)
            code = numpy.int32(ACTIVATION_CODES[activation])
            kernel("act_grad", dz.dtype.name)(
                _grid(dz.size), (THREADS,), (cupy.ascontiguousarray(dy), cupy.ascontiguousarray(y),
                                             dz, dz.size, code)
            )  # fmt: skip
        dW = x.T @ dz
        db = dz.sum(axis=0)
        return (dz @ W.T if need_dx else None), dW, db

    def softmax_xent(self, logits: Any, y_idx: Any) -> tuple[Any, Any]:
        logits = cupy.ascontiguousarray(logits)
        n, c = logits.shape
        dlogits = cupy.empty_like(logits)
        row_loss = cupy.empty(n, dtype=logits.dtype)
        rows_per_block = THREADS // 32
        kernel("softmax_xent", logits.dtype.name)(
            _grid(n, rows_per_block), (THREADS,),
            (logits, cupy.ascontiguousarray(y_idx, dtype=cupy.int64), dlogits, row_loss, n,
             numpy.int32(c), logits.dtype.type(1.0 / n)),
        )  # fmt: skip
        return row_loss.mean(), dlogits

    def softmax(self, logits: Any) -> Any:
        logits = cupy.ascontiguousarray(logits)
        n, c = logits.shape
        out = cupy.empty_like(logits)
        kernel("softmax", logits.dtype.name)(
            _grid(n, THREADS // 32), (THREADS,), (logits, out, n, numpy.int32(c))
        )
        return out

    def sgd_update(
        self, param: Any, grad: Any, velocity: Any | None, lr: float, momentum: float,
        nesterov: bool, weight_decay: float,
    ) -> None:  # fmt: skip
        f = param.dtype.type
        use_velocity = velocity is not None
        kernel("sgd", param.dtype.name)(
            _grid(param.size), (THREADS,),
            (param, cupy.ascontiguousarray(grad), velocity if use_velocity else param, param.size,
             f(lr), f(momentum), f(weight_decay), numpy.int32(use_velocity),
             numpy.int32(nesterov)),
        )  # fmt: skip

    def adam_update(
        self, param: Any, grad: Any, m: Any, v: Any, t: int, lr: float, beta1: float,
        beta2: float, eps: float, weight_decay: float,
    ) -> None:  # fmt: skip
        f = param.dtype.type
        kernel("adam", param.dtype.name)(
            _grid(param.size), (THREADS,),
            (param, cupy.ascontiguousarray(grad), m, v, param.size,
             f(lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)), f(beta1), f(beta2), f(eps),
             f(weight_decay)),
        )  # fmt: skip
