"""The cupy backend: the reference maths on a CUDA GPU, with fused kernels (kernels/cuda/).

Matrix products go to cuBLAS through CuPy; bias + activation, the activation derivative,
softmax cross-entropy, dropout and the optimizer updates are one kernel launch each. Data stays
on the device, in C order: the trainer uploads X and y once, minibatches are gathered on the
device by index, and loss and accuracy accumulate on the device until the epoch reads them once.

This module needs CuPy but not numba: it finds the CUDA sources without importing
``fastnn.kernels`` (whose numba kernels would be imported with it), so that a machine where
numba cannot import still gets this backend, or a clean "unavailable" from the registry.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import cupy
import numpy

from fastnn.backends.base import Backend
from fastnn.dropout import keep_scale, layer_key, threshold

# The codes of kernels/cuda/common.cuh's ActivationCode, the same numbers as
# kernels/activations.py's ACTIVATION_CODES (tests/test_cupy_host.py compares the three).
ACTIVATION_CODES = {"relu": 0, "tanh": 1, "sigmoid": 2, "identity": 3}
THREADS = 256  # threads per block of the elementwise and row kernels
MAX_BLOCKS = 4096  # grid-stride loops cover the rest
_C_TYPES = {"float32": "float", "float64": "double"}
KERNELS = {
    "dropout.cu": ("dropout",),
    "linear.cu": ("bias_act", "act_grad"),
    "loss.cu": ("softmax_xent", "softmax"),
    "optim.cu": ("sgd", "adam"),
}
_INCLUDE = re.compile(r'#include "([^"]+)"\s*')


def cuda_dir() -> Path:
    """The folder of the CUDA sources (kernels/cuda, installed as fastnn/kernels/cuda), found
    without importing the ``fastnn.kernels`` package."""
    spec = importlib.util.find_spec("fastnn.kernels")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fastnn.kernels is not installed: no CUDA sources to compile")
    return Path(next(iter(spec.submodule_search_locations))) / "cuda"


def source(name: str, folder: Path | None = None) -> str:
    """The text of ``name`` with each ``#include "header"`` replaced by the header's text (once,
    as ``#pragma once`` would), with ``#line`` marks so that NVRTC's messages name the right
    file and line. CuPy keys its kernel cache on the source it compiles, not on the headers
    that source includes: pasted in, an edit to a header compiles anew."""
    return _expand(folder or cuda_dir(), name, set())


def _expand(folder: Path, name: str, seen: set[str]) -> str:
    lines = [f'#line 1 "{name}"']
    for number, line in enumerate((folder / name).read_text().splitlines(), start=1):
        include = _INCLUDE.fullmatch(line)
        if include:
            header = include.group(1)
            if header not in seen:
                seen.add(header)
                lines.append(_expand(folder, header, seen))
            lines.append(f'#line {number + 1} "{name}"')
        else:  # NVRTC warns of #pragma once in the main file; a blank keeps the numbering
            lines.append("" if line.strip() == "#pragma once" else line)
    return "\n".join(lines)


@functools.cache
def kernel(name: str, dtype: str) -> Any:
    """The compiled kernel ``name`` for float32 or float64 (compiled once per process)."""
    source_name = next(f for f, names in KERNELS.items() if name in names)
    return _module(source_name).get_function(f"{name}<{_C_TYPES[dtype]}>")


@functools.cache
def _module(source_name: str) -> Any:
    names = [f"{k}<{t}>" for k in KERNELS[source_name] for t in _C_TYPES.values()]
    return cupy.RawModule(code=source(source_name), options=("-std=c++17",), name_expressions=names)


def _grid(size: int, per_block: int = THREADS) -> tuple[int]:
    return (max(1, min(MAX_BLOCKS, -(-size // per_block))),)


def _dtype_name(verb: str, a: Any) -> str:
    """The kernels' dtype of ``a`` (float32 or float64), or a clear error."""
    if not isinstance(a, cupy.ndarray):
        raise TypeError(
            f"cupy backend {verb}: expected a CuPy array, got {type(a).__module__}."
            f"{type(a).__name__} (put host arrays on the device with backend.asarray)"
        )
    if a.dtype.name not in _C_TYPES:
        raise TypeError(f"cupy backend {verb}: float32 or float64 arrays only, got {a.dtype}")
    return a.dtype.name


def _operand(verb: str, what: str, a: Any, like: Any, size: int | None = None, *,
             in_place: bool = False) -> Any:  # fmt: skip
    """``a`` as the raw pointer of a kernel that reads (or, ``in_place``, writes) ``size``
    elements (default: ``like.size``) of ``like``'s dtype in C order: a read-only operand is
    made contiguous (a copy if need be); anything else is refused before a kernel reads the
    wrong memory."""
    size = like.size if size is None else size
    if not isinstance(a, cupy.ndarray) or a.dtype != like.dtype or a.size != size:
        got = (f"{a.dtype} {type(a).__name__} of shape {a.shape}" if hasattr(a, "dtype")
               else type(a).__name__)  # fmt: skip
        raise TypeError(
            f"cupy backend {verb}: {what} must be a {like.dtype} CuPy array of {size} "
            f"elements, got a {got}"
        )
    if a.flags.c_contiguous:
        return a
    if in_place:
        raise ValueError(
            f"cupy backend {verb}: {what} is updated in place and must be C-contiguous "
            f"(strides {a.strides} for shape {a.shape}); make it with backend.asarray"
        )
    return cupy.ascontiguousarray(a)


class CupyBackend(Backend):
    name = "cupy"
    xp = cupy

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` on the device in C order (no copy when already so): the kernels take raw
        pointers, and row gathers of minibatches read whole rows."""
        return cupy.asarray(a, dtype=dtype, order="C")

    def to_numpy(self, a: Any) -> numpy.ndarray:
        return cupy.asnumpy(a)

    def synchronize(self) -> None:
        cupy.cuda.get_current_stream().synchronize()

    def linear(self, x: Any, W: Any, b: Any, activation: str) -> Any:
        z = cupy.ascontiguousarray(x) @ W
        dtype = _dtype_name("linear", z)
        n, m = z.shape
        b = _operand("linear", "b", b, z, m)
        if z.size:
            kernel("bias_act", dtype)(
                _grid(z.size), (THREADS,),
                (z, b, numpy.int64(n), numpy.int64(m), numpy.int32(ACTIVATION_CODES[activation])),
            )  # fmt: skip
        return z

    def linear_backward(
        self, dy: Any, x: Any, W: Any, y: Any, activation: str, need_dx: bool
    ) -> tuple[Any | None, Any, Any]:
        dz = dy
        if activation != "identity":
            dtype = _dtype_name("linear_backward", dy)
            dy = _operand("linear_backward", "dy", dy, dy)
            y = _operand("linear_backward", "y", y, dy)
            dz = cupy.empty_like(dy)
            if dz.size:
                kernel("act_grad", dtype)(
                    _grid(dz.size), (THREADS,),
                    (dy, y, dz, numpy.int64(dz.size), numpy.int32(ACTIVATION_CODES[activation])),
                )  # fmt: skip
        dW = x.T @ dz
        db = dz.sum(axis=0)
        return (dz @ W.T if need_dx else None), dW, db

    def softmax_xent(self, logits: Any, y_idx: Any) -> tuple[Any, Any]:
        dtype = _dtype_name("softmax_xent", logits)
        logits = cupy.ascontiguousarray(logits)
        n, c = logits.shape
        dlogits = cupy.empty_like(logits)
        row_loss = cupy.empty(n, dtype=logits.dtype)
        rows_per_block = THREADS // 32
        kernel("softmax_xent", dtype)(
            _grid(n, rows_per_block), (THREADS,),
            (logits, cupy.ascontiguousarray(y_idx, dtype=cupy.int64), dlogits, row_loss,
             numpy.int64(n), numpy.int32(c), logits.dtype.type(1.0 / n)),
        )  # fmt: skip
        return row_loss.mean(), dlogits

    def softmax(self, logits: Any) -> Any:
        dtype = _dtype_name("softmax", logits)
        logits = cupy.ascontiguousarray(logits)
        n, c = logits.shape
        out = cupy.empty_like(logits)
        kernel("softmax", dtype)(
            _grid(n, THREADS // 32), (THREADS,), (logits, out, numpy.int64(n), numpy.int32(c))
        )
        return out

    def dropout(self, h: Any, seed: int, step: int, layer: int, rate: float) -> tuple[Any, Any]:
        """The reference's (h * mask, mask) in one kernel: key, threshold and the scale (1 / (1
        - rate) rounded to h's dtype) from fastnn.dropout, as keep_mask takes them."""
        dtype = _dtype_name("dropout", h)
        h = cupy.ascontiguousarray(h)
        n, m = h.shape
        out, mask = cupy.empty_like(h), cupy.empty_like(h)
        if h.size:
            kernel("dropout", dtype)(
                _grid(h.size), (THREADS,),
                (h, out, mask, numpy.int64(n), numpy.int64(m),
                 numpy.uint32(layer_key(seed, step, layer)), numpy.uint32(threshold(rate)),
                 h.dtype.type(keep_scale(rate))),
            )  # fmt: skip
        return out, mask

    def sgd_update(
        self, param: Any, grad: Any, velocity: Any | None, lr: float, momentum: float,
        nesterov: bool, weight_decay: float,
    ) -> None:  # fmt: skip
        dtype = _dtype_name("sgd_update", param)
        param = _operand("sgd_update", "param", param, param, in_place=True)
        grad = _operand("sgd_update", "grad", grad, param)
        use_velocity = velocity is not None
        if use_velocity:
            velocity = _operand("sgd_update", "velocity", velocity, param, in_place=True)
        f = param.dtype.type
        kernel("sgd", dtype)(
            _grid(param.size), (THREADS,),
            (param, grad, velocity if use_velocity else param, numpy.int64(param.size), f(lr),
             f(momentum), f(weight_decay), numpy.int32(use_velocity), numpy.int32(nesterov)),
        )  # fmt: skip

    def adam_update(
        self, param: Any, grad: Any, m: Any, v: Any, t: int, lr: float, beta1: float,
        beta2: float, eps: float, weight_decay: float,
    ) -> None:  # fmt: skip
        dtype = _dtype_name("adam_update", param)
        param = _operand("adam_update", "param", param, param, in_place=True)
        grad = _operand("adam_update", "grad", grad, param)
        m = _operand("adam_update", "m", m, param, in_place=True)
        v = _operand("adam_update", "v", v, param, in_place=True)
        f = param.dtype.type
        kernel("adam", dtype)(
            _grid(param.size), (THREADS,),
            (param, grad, m, v, numpy.int64(param.size),
             f(lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)), f(beta1), f(beta2), f(eps),
             f(weight_decay)),
        )  # fmt: skip
