"""Fused vs layered numba epochs per shape, to set FUSED_LIMITS in fastnn/backends/numba.py
for a compile target, and the fused kernel's two first-layer products (_forward_dots vs
_forward_rows) per hidden width, to set NARROW_MAX_HIDDEN in kernels/step.py:
``python -m bench.kernel_paths [paths|narrow]`` (set NUMBA_CPU_NAME and NUMBA_CPU_FEATURES for
another target). Each timed epoch (60000 synthetic float32 rows, fresh
parameters, both paths in one process) follows 0.5 s idle: OpenBLAS's workers spin for about
0.1 s after a product and would slow the fused epoch that follows a layered one."""

from __future__ import annotations

import sys
import time
from unittest import mock

import fastnn.kernels.step as step
import numba
import numpy as np
from fastnn.kernels.target import cpu_name

from bench.workloads import N_TRAIN, synthetic_mnist
from fastnn.backends import get_backend
from fastnn.backends.base import Backend
from fastnn.model import init_params
from fastnn.optim import Optimizer, init_state

SHAPES = [((784, 16, 10), 64, "sgd"), ((784, 64, 10), 128, "sgd"), ((784, 100, 10), 200, "adam"),
          ((784, 128, 10), 128, "sgd"), ((784, 200, 10), 128, "sgd"), ((784, 256, 10), 128, "sgd"),
          ((784, 384, 10), 128, "sgd"), ((784, 512, 10), 128, "sgd"), ((64, 512, 10), 128, "sgd"),
          ((256, 200, 10), 128, "sgd"), ((784, 128, 10), 32, "sgd")]  # fmt: skip
NARROW_WIDTHS = (6, 8, 10, 12, 14, 16, 20, 24, 32)
NARROW_BATCHES = (64, 128, 60000)
REPS = 2
IDLE = 0.5  # seconds before each timed epoch


def epoch_seconds(path: str, sizes: tuple[int, ...], batch: int, opt: Optimizer,
                  X: np.ndarray, y: np.ndarray, order: np.ndarray) -> float:  # fmt: skip
    """One epoch on ``path`` ("fused" or "layered") from fresh parameters."""
    be = get_backend("numba")
    params = init_params(sizes, "relu", X.dtype, np.random.default_rng(0))
    state = init_state(be, opt, params)
    be.warm_up(params, state, X, y, batch, "relu", opt)
    time.sleep(IDLE)
    t0 = time.perf_counter()
    if path == "fused":
        be._fused_batches(params, state, X, y, order, 0, N_TRAIN, batch, "relu", opt,
                          numba.get_num_threads())  # fmt: skip
    else:
        Backend.train_batches(be, params, state, X, y, order, 0, N_TRAIN, batch, "relu", opt)
    return time.perf_counter() - t0


def main() -> None:
    X_all, y = synthetic_mnist()
    order = np.random.default_rng(0).permutation(N_TRAIN).astype(np.int64)
    print(f"numba target {cpu_name()}; epoch seconds, min of {REPS}")
    sections = sys.argv[1:] or ["paths", "narrow"]
    if "paths" in sections:
        paths(X_all, y, order)
    if "narrow" in sections:
        narrow(X_all, y, order)


def narrow(X_all: np.ndarray, y: np.ndarray, order: np.ndarray) -> None:
    """Fused epochs of 784-H-10 SGD with _forward_dots forced on and off, per dtype and batch."""
    opt = Optimizer("sgd", 0.1)
    for dtype in (np.float32, np.float64):
        X = X_all.astype(dtype)
        for H in NARROW_WIDTHS:
            for batch in NARROW_BATCHES:
                times = {True: [], False: []}
                for _ in range(REPS):
                    for dots, ts in times.items():
                        with mock.patch.object(step, "narrow_layer", lambda D, H, t, d=dots: d):
                            ts.append(epoch_seconds("fused", (784, H, 10), batch, opt, X, y,
                                                    order))  # fmt: skip
                dots, rows = min(times[True]), min(times[False])
                print(f"{np.dtype(dtype).name} 784-{H}-10 b{batch}: dots {dots:.3f} rows "
                      f"{rows:.3f} (rows / dots {rows / dots:.2f}x)", flush=True)  # fmt: skip


def paths(X_all: np.ndarray, y: np.ndarray, order: np.ndarray) -> None:
    """Fused vs layered epochs for SHAPES."""
    for sizes, batch, solver in SHAPES:
        X = np.ascontiguousarray(X_all[:, : sizes[0]])
        opt = Optimizer(solver, 0.1 if solver == "sgd" else 1e-3)
        times = {"fused": [], "layered": []}
        for _ in range(REPS):
            for path, ts in times.items():
                ts.append(epoch_seconds(path, sizes, batch, opt, X, y, order))
        fused, layered = min(times["fused"]), min(times["layered"])
        name = "-".join(map(str, sizes))
        print(f"{name} {solver} b{batch}: fused {fused:.3f} layered {layered:.3f} "
              f"(layered / fused {layered / fused:.2f}x)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
