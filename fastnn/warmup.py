"""numba's one-time kernel compilation: said once when a run has to wait for it, or done ahead.

A kernel missing from numba's on-disk cache compiles at its first call (tens of seconds for
the fused step). ``announce_compiles`` prints one line on stderr when that happens, once per
process; ``compile_kernels`` (``fastnn compile``, or ``python -m fastnn compile``) compiles
every kernel ahead, e.g. in a Docker build step, through the same ``Backend.warm_up`` that runs
call, so what it compiles is what they need.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastnn.io import DTYPES

COMPILE_COMMAND = "fastnn compile"
# shapes that `fastnn info` reports the kernel path of
COMMON_SHAPES = ((784, 10, 10), (784, 100, 10), (784, 128, 10), (784, 256, 10), (784, 512, 10),
                 (784, 256, 128, 10), (64, 100, 10))  # fmt: skip
# tiny networks for compile_kernels: the first of each kernel path (per kernel_path) is used
_COMPILE_SHAPES = ((16, 8, 4), (16, 8, 8, 4), (16, 1, 2), (16, 1024, 4), (16, 8, 128))
_ROWS, _BATCH = 8, 4
_ACTIVATIONS = ("relu", "tanh", "sigmoid")

_announced = False  # the notice is printed once per process


def compile_notice() -> str:
    """The one line printed when a run has to compile kernels: what, for which CPU, how to
    avoid it."""
    target = compile_target()
    return (
        f"fastnn: compiling numba kernels for this CPU ({target['cpu']}, {target['isa']}); "
        f"this happens once, later runs load them from numba's cache (to compile ahead, e.g. "
        f"in a Docker build: {COMPILE_COMMAND})"
    )


@contextlib.contextmanager
def announce_compiles(enabled: bool = True) -> Iterator[None]:
    """While active, numba's first compilation of a kernel it has neither in memory nor on
    disk prints ``compile_notice()`` on stderr, once per process."""
    if not enabled or _announced or "numba" not in sys.modules:  # numba compiles nothing
        yield
        return
    from numba.core import event

    class Notice(event.Listener):
        def on_start(self, ev: Any) -> None:
            global _announced
            if not _announced:
                _announced = True
                print(compile_notice(), file=sys.stderr, flush=True)

        def on_end(self, ev: Any) -> None:
            pass

    with event.install_listener("numba:compile", Notice()):
        yield


def compile_target() -> dict[str, Any]:
    """The CPU numba compiles for and its SIMD shape (fastnn.kernels.target)."""
    from fastnn.kernels import target

    return {"cpu": target.cpu_name(), "isa": target.isa(), "vector_bytes": target.VECTOR_BYTES,
            "vector_registers": target.VECTOR_REGISTERS}  # fmt: skip


def kernel_paths(shapes: Sequence[Sequence[int]] = COMMON_SHAPES) -> dict[str, str]:
    """{"784-100-10": "fused", ...}: which numba kernel path trains each shape here."""
    from fastnn.backends.numba import kernel_path

    return {"-".join(map(str, s)): kernel_path(tuple(s)) for s in shapes}


@dataclass
class CompiledKernel:
    """One kernel compiled into the cache: its name, the variant (dtype, read-only data) and
    the seconds it took, its helper functions included."""

    kernel: str
    variant: str
    seconds: float


@dataclass
class CompileReport:
    """What ``compile_kernels`` did; ``compiled`` is empty when the cache was already warm."""

    dtypes: list[str]
    paths: dict[str, str]
    compiled: list[CompiledKernel] = field(default_factory=list)
    seconds: float = 0.0
    cache_dir: str = ""


def compile_kernels(
    dtypes: Sequence[str] = DTYPES,
    on_compiled: Callable[[CompiledKernel], None] | None = None,
) -> CompileReport:
    """Compile every numba kernel for ``dtypes`` into numba's on-disk cache: both kernel
    paths, every optimizer (SGD, momentum, Nesterov, Adam) and activation, classification
    labels and regression targets, with writable and read-only data (joblib's memory-mapped
    workers pass read-only arrays).

    Each variant runs ``NumbaBackend.warm_up`` on a tiny network, as a training run does;
    ``on_compiled`` is called as each kernel finishes compiling.
    """
    import numpy as np

    from fastnn.backends import get_backend
    from fastnn.backends.numba import KERNELS, kernel_path
    from fastnn.model import init_params
    from fastnn.optim import Optimizer, init_state

    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(
            f"dtype {unknown[0]!r} is not supported; choose one of {', '.join(DTYPES)}"
        )
    backend = get_backend("numba")
    paths: dict[str, tuple[int, ...]] = {}
    for sizes in _COMPILE_SHAPES:
        paths.setdefault(kernel_path(sizes), sizes)
    optimizers = (Optimizer("sgd", 0.1), Optimizer("sgd", 0.1, momentum=0.9),
                  Optimizer("sgd", 0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
                  Optimizer("adam", 1e-3, weight_decay=1e-4))  # fmt: skip
    report = CompileReport(list(dtypes), {k: "-".join(map(str, v)) for k, v in paths.items()})
    report.cache_dir = str(KERNELS[0].stats.cache_path)
    t0 = time.perf_counter()
    with _record_compiles(set(KERNELS), report.compiled, on_compiled):
        for dtype in dtypes:
            for sizes in paths.values():
                X = (np.arange(_ROWS * sizes[0]) % 7 / 7).reshape(_ROWS, -1).astype(dtype)
                labels = np.arange(_ROWS, dtype=np.int64) % sizes[-1]
                targets = (labels[:, None] == np.arange(sizes[-1])).astype(dtype)
                read_only, targets_read_only = X.copy(), targets.copy()
                read_only.setflags(write=False)
                targets_read_only.setflags(write=False)
                # classification: labels of the model's own; a regression's targets may be
                # the caller's array, memory-mapped (read-only) like X
                variants = [(X, labels, "softmax"), (read_only, labels, "softmax"),
                            (X, targets, "identity"), (read_only, targets, "identity"),
                            (read_only, targets_read_only, "identity")]  # fmt: skip
                for activation in _ACTIVATIONS:
                    params = init_params(sizes, activation, dtype, np.random.default_rng(0))
                    for opt in optimizers:
                        state = init_state(backend, opt, params)
                        for data, y, output in variants:
                            backend.warm_up(params, state, data, y, _BATCH, activation, opt,
                                            output)  # fmt: skip
    report.seconds = time.perf_counter() - t0
    return report


@contextlib.contextmanager
def _record_compiles(
    kernels: set[Any],
    out: list[CompiledKernel],
    on_compiled: Callable[[CompiledKernel], None] | None,
) -> Iterator[None]:
    """Append a CompiledKernel to ``out`` as each of ``kernels`` finishes compiling."""
    from numba.core import event

    class Recorder(event.Listener):
        def __init__(self) -> None:
            self.started: list[float] = []

        def on_start(self, ev: Any) -> None:
            self.started.append(time.perf_counter())

        def on_end(self, ev: Any) -> None:
            seconds = time.perf_counter() - self.started.pop()
            dispatcher = ev.data["dispatcher"]
            if dispatcher in kernels:
                func = dispatcher.py_func
                name = f"{func.__module__.rsplit('.', 1)[-1]}.{func.__name__}"
                done = CompiledKernel(name, _variant(ev.data["args"]), seconds)
                out.append(done)
                if on_compiled is not None:
                    on_compiled(done)

    with event.install_listener("numba:compile", Recorder()):
        yield


def _variant(args: Sequence[Any]) -> str:
    """The dtype of a kernel's first array argument, and whether that array is read-only."""
    first = next((a for a in args if hasattr(a, "dtype") and hasattr(a, "mutable")), None)
    if first is None:
        return ""
    return f"{first.dtype}" + ("" if first.mutable else ", read-only data")
