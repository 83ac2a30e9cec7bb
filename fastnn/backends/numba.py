"""The numba backend: fastnn.kernels' fused JIT kernels behind the Backend interface.

Two paths, chosen by shape in ``train_batches``: networks with one narrow hidden layer train
whole runs of minibatches in one fused multithreaded kernel (kernels/step.py; softmax,
identity and exp outputs, unweighted); every other network, and every weighted or multi-label
("logistic") fit, uses BLAS matrix products with fused epilogues, softmax cross-entropy and
optimizer updates (the reference's maths for the other losses). Both train with the
optimizer's learning-rate schedule and dropout as the reference does: the fused kernel takes
each step's rate and draws fastnn.dropout's masks itself, the layered path draws them with
kernels/dropout.py (the ``dropout`` verb).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from fastnn.backends.base import Backend, dense_rows
from fastnn.cores import FreeCores
from fastnn.dropout import MASK32, keep_scale, threshold
from fastnn.kernels.activations import ACTIVATION_CODES
from fastnn.kernels.dropout import dropout_
from fastnn.kernels.linear import act_grad_colsum, bias_act_
from fastnn.kernels.loss import softmax_, softmax_xent_
from fastnn.kernels.optim import adam_, sgd_
from fastnn.kernels.step import OUTPUT_CODES, fused_batches, fused_steps
from fastnn.kernels.target import VECTOR_BYTES, has_fma
from fastnn.optim import Optimizer, OptimizerState

# Where the fused kernel beats BLAS layers, per vector width of the compile target
# (kernels/target.py): the widest hidden layer, and the most first-layer weights (D x H).
# Measured by ``python -m bench.kernel_paths`` (both paths in one process, one epoch of 60000
# float32 rows after 0.5 s idle: OpenBLAS's workers spin for about 0.1 s after a product, a
# fused epoch right after a layered one ran up to 2x slower, and an earlier measurement
# without the pause had put AVX2's limit at 784x72), SGD b128 unless noted, on a 2-core
# Zen 5 whose BLAS runs OpenBLAS's Haswell (AVX2) kernels:
# - 64 bytes (AVX-512, numba znver5): fused faster everywhere: 784-16-10 b64 4.0x,
#   784-100-10 Adam b200 2.1x, 784-128-10 1.7x (b32: 1.5x), 784-256-10 1.45x, 784-512-10
#   1.35x, 64-512-10 2.4x;
# - 32 bytes (AVX2, numba haswell with no extra features): fused 0.039 s vs layered 0.085
#   at 784-16-10 b64, 0.099 / 0.137 at 784-64-10, 0.165 / 0.184 at 784-100-10 Adam b200,
#   0.175 / 0.202 at 784-128-10, 0.086 / 0.127 at 64-512-10, 0.114 / 0.148 at 256-200-10;
#   even from 784x200 to 784x384 weights (0.98x-1.13x), layered faster at 784-512-10
#   (0.762 / 0.630) and at 784-128-10 b32 (0.318 / 0.273): AVX2's FMA rate is half of
#   AVX-512's, and there the BLAS's larger register blocks win. A 2-core Zen 1 (native AVX2)
#   agreed: fused/layered 0.89x at 784-128-10, 0.87x at 784-100-10 Adam. A 2-core Zen 4 under
#   haswell with OpenBLAS's Haswell kernels was at the edge: 1.00x at 784-64-10, 1.11x at
#   784-100-10 Adam, 1.06x at 784-128-10 (noise there is about 10%), 3.8x faster at 784-16-10;
#   and after the first layer's register blocks stopped spilling on AVX2 (step.py's
#   _forward_pair), the same Zen 4 in a slow phase: fused / layered 0.080 / 0.187 s at
#   784-16-10 b64, 0.161 / 0.328 at 784-64-10, 0.274 / 0.364 at 784-100-10 Adam b200, 0.386 /
#   0.369 at 784-128-10, 0.399 / 0.414 at 784-200-10, 0.533 / 0.469 at 784-256-10, 0.800 /
#   0.702 at 784-128-10 b32: still at the edge from 784 x 128 on, so the limit stays there;
# - 16 bytes on x86 (SSE, numba x86-64): no FMA instruction, each lane's fma a libm call
#   (784-10-10: fused 1.10 s vs layered 0.117 s): no target without FMA (SSE, AVX without
#   AVX2) takes the fused path. 64-bit ARM (NEON, 16 bytes with FMA) has not been measured;
#   it takes AVX2's limits.
FUSED_LIMITS = {64: (512, None), 32: (512, 784 * 128), 16: (512, 784 * 128)}
# (most hidden units, most first-layer weights D x H; None: no limit)
FUSED_MAX_HIDDEN, FUSED_MAX_WEIGHTS = FUSED_LIMITS[VECTOR_BYTES] if has_fma() else (0, 0)
FUSED_MAX_CLASSES = 64


class NumbaBackend(Backend):
    name = "numba"
    xp = np

    def __init__(self) -> None:
        self._free_cores = FreeCores()
        self._fixed_threads = False  # inside limit_threads: the caller's count, as given
        self._blas = ThreadpoolController()

    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=dtype)

    @contextlib.contextmanager
    def limit_threads(self, n_threads: int | None) -> Iterator[None]:
        """BLAS and numba threads together."""
        with super().limit_threads(n_threads):
            if n_threads is None:
                yield
                return
            previous, fixed = numba.get_num_threads(), self._fixed_threads
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
            self._fixed_threads = True
            try:
                yield
            finally:
                numba.set_num_threads(previous)
                self._fixed_threads = fixed

    def _threads(self) -> int:
        """Threads for the next run of steps: numba's count, fewer where other processes keep
        cores busy (fastnn.cores), unless limit_threads fixed the count."""
        limit = numba.get_num_threads()
        return limit if self._fixed_threads else min(limit, self._free_cores())

    @contextlib.contextmanager
    def _sharing(self, threads: int) -> Iterator[None]:
        """numba's team and BLAS limited to ``threads`` for the block (no-op at the limit)."""
        previous = numba.get_num_threads()
        if threads >= previous:
            yield
            return
        numba.set_num_threads(threads)
        try:
            with self._blas.limit(limits=threads, user_api="blas"):
                yield
        finally:
            numba.set_num_threads(previous)

    def warm_up(
        self, params: list[np.ndarray], state: OptimizerState, X: np.ndarray, y_idx: np.ndarray,
        batch_size: int, activation: str, opt: Optimizer, output: str = "softmax",
        weights: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """Compile, or load from numba's on-disk cache, every kernel a run with these arguments
        calls (training on its path, validation scores, predictions), by running them once on
        the first rows of X with copies of the parameters and optimizer state; the dropout
        kernel always (a few microseconds when cached), so that ``fastnn compile`` compiles
        it for the runs that set a dropout rate."""
        rows = min(WARM_UP_ROWS, X.shape[0])
        x, y = dense_rows(self, X, slice(0, rows)), y_idx[:rows]  # views of a dense X: the
        # same numba types as the whole arrays
        ps = [p.copy() for p in params]
        index = np.arange(rows, dtype=np.int64)  # shuffled or not, kernels take an int64 index
        with np.errstate(all="ignore"):
            w = None if weights is None else weights[:rows]
            self.train_batches(ps, state.copy(), x, y, index, 0, rows, min(batch_size, rows),
                               activation, opt, output, w)  # fmt: skip
            logits = self.forward(ps, x, activation)
            self.output_loss(logits, y, output, w)  # validation scores
            self.output_probs(logits, output)  # predictions
            self.dropout(logits, 0, 0, 0, 0.5)

    @contextlib.contextmanager
    def scoring_between_epochs(self, params: list[np.ndarray]) -> Iterator[None]:
        """BLAS on one thread when the network trains on the fused path: after a product on
        several threads, OpenBLAS's idle workers spin for about 0.1 s, taking the cores from
        the fused kernel's threads (measured: 784-128-10 epochs of 0.23 s instead of 0.145 s
        with a validation score between them, Zen 5); one thread costs the score a few ms."""
        if len(params) == 4 and kernel_path(_sizes(params)) == "fused":
            with self._blas.limit(limits=1, user_api="blas"):
                yield
        else:
            yield

    def linear(self, x: np.ndarray, W: np.ndarray, b: np.ndarray, activation: str) -> np.ndarray:
        z = _c(x) @ W
        bias_act_(z, b, ACTIVATION_CODES[activation])
        return z

    def linear_backward(
        self, dy: np.ndarray, x: np.ndarray, W: np.ndarray, y: np.ndarray, activation: str,
        need_dx: bool,
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:  # fmt: skip
        dz, db = act_grad_colsum(_c(dy), _c(y), ACTIVATION_CODES[activation])
        dW = x.T @ dz
        return (dz @ W.T if need_dx else None), dW, db

    def dropout(
        self, h: np.ndarray, seed: int, step: int, layer: int, rate: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(h * mask, mask) in one pass (kernels/dropout.py), fastnn.dropout's masks."""
        h = _c(h)
        out, mask = np.empty_like(h), np.empty_like(h)
        dropout_(h, seed & MASK32, step & MASK32, layer, threshold(rate), keep_scale(rate),
                 out, mask)  # fmt: skip
        return out, mask

    def softmax_xent(self, logits: np.ndarray, y_idx: np.ndarray) -> tuple[Any, np.ndarray]:
        logits = _c(logits)
        dlogits = np.empty_like(logits)
        loss = softmax_xent_(logits, _c(y_idx), dlogits)
        return logits.dtype.type(loss), dlogits

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        logits = _c(logits)
        out = np.empty_like(logits)
        softmax_(logits, out)
        return out

    def sgd_update(
        self, param: np.ndarray, grad: np.ndarray, velocity: np.ndarray | None, lr: float,
        momentum: float, nesterov: bool, weight_decay: float,
    ) -> None:  # fmt: skip
        flat = param.reshape(-1)
        v = flat[:0] if velocity is None else velocity.reshape(-1)
        sgd_(flat, _flat(grad), v, float(lr), float(momentum), bool(nesterov),
             float(weight_decay), velocity is not None)  # fmt: skip

    def adam_update(
        self, param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int,
        lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
    ) -> None:  # fmt: skip
        adam_(param.reshape(-1), _flat(grad), m.reshape(-1), v.reshape(-1), float(lr),
              float(beta1), float(beta2), float(eps), float(weight_decay),
              1.0 - beta1**t, 1.0 - beta2**t)  # fmt: skip

    def train_batches(
        self, params: list[np.ndarray], state: OptimizerState, X: np.ndarray, y_idx: np.ndarray,
        index: np.ndarray | None, start: int, stop: int, batch_size: int, activation: str,
        opt: Optimizer, output: str = "softmax", weights: np.ndarray | None = None,
    ) -> tuple[Any, Any]:  # fmt: skip
        """The fused kernel for an unweighted softmax, identity or exp output where fusable
        (labels for softmax, targets for a regression); else the reference's loop of layers."""
        threads = self._threads()
        with self._sharing(threads):
            # the kernel's losses: softmax against labels (N,), a regression's against (N, C)
            labels = np.ndim(y_idx) == 1
            fused = output in OUTPUT_CODES and weights is None and labels == (output == "softmax")
            if not fused or not fusable(params, X, y_idx, index):
                return super().train_batches(
                    params, state, X, y_idx, index, start, stop, batch_size, activation, opt,
                    output, weights,
                )  # fmt: skip
            return self._fused_batches(params, state, X, y_idx, index, start, stop, batch_size,
                                       activation, opt, threads, output)  # fmt: skip

    def _fused_batches(
        self, params: list[np.ndarray], state: OptimizerState, X: np.ndarray, y_idx: np.ndarray,
        index: np.ndarray | None, start: int, stop: int, batch_size: int, activation: str,
        opt: Optimizer, threads: int, output: str = "softmax",
    ) -> tuple[Any, Any]:  # fmt: skip
        """The fused kernel over the minibatches of rows start:stop, each step at the rate
        opt.rate gives its number (state.step + k for the call's k-th step, as the
        reference's apply_update) and with opt's dropout."""
        W1, b1, W2, b2 = params
        slots = [state.slots.get("velocity", state.slots.get("m")), state.slots.get("v")]
        s = slots[0] or [_empty_like(p) for p in params]
        q = slots[1] or [_empty_like(p) for p in params]
        steps = -(-(stop - start) // batch_size)
        rates = np.array([opt.rate(state.step + k) for k in range(steps)], dtype=np.float64)
        loss_sum, correct, state.step = fused_batches(
            X, y_idx, index if index is not None else np.empty(0, np.int64), index is not None,
            start, stop, batch_size, W1, b1, W2, b2, ACTIVATION_CODES[activation],
            OUTPUT_CODES[output], opt.name == "adam", rates, float(opt.momentum),
            bool(opt.nesterov), opt.name == "sgd" and opt.momentum > 0, float(opt.beta1),
            float(opt.beta2), float(opt.eps), float(opt.weight_decay), float(opt.alpha),
            float(opt.dropout), int(opt.dropout_seed), state.step, *s, *q,
            threads, numba.config.NUMBA_NUM_THREADS,
        )  # fmt: skip
        return loss_sum, correct


KERNELS = (bias_act_, act_grad_colsum, softmax_xent_, softmax_, sgd_, adam_, dropout_,
           fused_steps)  # fmt: skip
WARM_UP_ROWS = 8  # rows warm_up trains on: enough for every kernel to run its code


def kernel_cache_status() -> tuple[int, int]:
    """(kernels with compiled machine code in numba's on-disk cache, kernels in all)."""
    warm = 0
    for kernel in KERNELS:
        try:
            warm += os.path.exists(kernel._cache._cache_file._index_path)
        except AttributeError:  # numba internals moved: report the kernel as cold
            pass
    return warm, len(KERNELS)


def kernel_path(sizes: tuple[int, ...]) -> str:
    """Which path trains a network of these layer sizes here: "fused" (kernels/step.py, one
    hidden layer, narrow enough to beat BLAS on this target) or "layered" (BLAS products)."""
    if len(sizes) != 3:
        return "layered"
    D, H, C = sizes
    weights_fit = FUSED_MAX_WEIGHTS is None or D * H <= FUSED_MAX_WEIGHTS
    fused = H <= FUSED_MAX_HIDDEN and C <= FUSED_MAX_CLASSES and weights_fit
    return "fused" if fused else "layered"


def fusable(params: list[np.ndarray], X: Any, y_idx: Any, index: Any) -> bool:
    """Whether the fused one-hidden-layer kernel applies (and beats the layered path) to y:
    int64 labels (N,), or a regression's targets, C-contiguous (N, C) of X's dtype."""
    if len(params) != 4 or not isinstance(X, np.ndarray) or X.dtype != params[0].dtype:
        return False
    if not isinstance(y_idx, np.ndarray):
        return False
    if y_idx.ndim == 1:
        y_fits = y_idx.dtype == np.int64
    else:
        y_fits = (y_idx.ndim == 2 and y_idx.shape[1] == params[2].shape[1]
                  and y_idx.dtype == X.dtype and y_idx.flags.c_contiguous)  # fmt: skip
    return (
        kernel_path(_sizes(params)) == "fused"
        and X.flags.c_contiguous
        and y_fits
        and (index is None or index.dtype == np.int64)
    )


def _sizes(params: list[np.ndarray]) -> tuple[int, ...]:
    """The layer sizes (D, H, ..., C) of a network's [W1, b1, W2, b2, ...]."""
    return (params[0].shape[0], *(W.shape[1] for W in params[::2]))


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def _empty_like(p: np.ndarray) -> np.ndarray:
    return np.empty((0,) * p.ndim, dtype=p.dtype)
