"""Backend registry: ``get_backend(name)`` and ``available_backends()``.

A new backend is one module and one line in ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from fastnn._compat import cuda_device_problem, has_numba
from fastnn.backends.base import Backend
from fastnn.errors import BackendUnavailableError


def _always() -> str | None:
    return None


def _numba_problem() -> str | None:
    return None if has_numba() else "numba is not installed (pip install numba)"


# name -> (module:class, probe returning None when usable or the reason it is not).
# Order is the preference of "auto", best first.
_REGISTRY: dict[str, tuple[str, Callable[[], str | None]]] = {
    "cupy": ("fastnn.backends.cupy:CupyBackend", cuda_device_problem),
    "numba": ("fastnn.backends.numba:NumbaBackend", _numba_problem),
    "numpy": ("fastnn.backends.numpy:NumpyBackend", _always),
}
_AUTO_ORDER = ("cupy", "numba", "numpy")
_instances: dict[str, Backend] = {}
# "auto" takes the GPU only for training steps big enough to pay for its kernel launches and
# host round trips (about 25 launches a step, issue 17): this many multiply-adds in one
# minibatch's forward pass (rows x the network's weights). Not yet measured on a GPU; from
# bench/RESULTS.md numba trains `small` (128 x 101,632 = 13M) in about 290 us a step, near an
# eager cupy step's launch overhead, and `medium` (256 x 234,752 = 60M) in 1.7 ms, several times
# it. bench/gpu_check.sh measures both; a captured (CUDA graph) step would lower the bar.
GPU_MIN_STEP_WORK = 2**25


def backend_names() -> tuple[str, ...]:
    """Every name ``get_backend`` accepts."""
    return (*_REGISTRY, "auto")


def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` can run here, else why not."""
    if name not in _REGISTRY:
        return f"fastnn {_version()} has no {name!r} backend"
    return _REGISTRY[name][1]()


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine, best first."""
    ordered = [n for n in _AUTO_ORDER if n in _REGISTRY] + [
        n for n in _REGISTRY if n not in _AUTO_ORDER
    ]
    return [n for n in ordered if unavailable_reason(n) is None]


def auto_backend(step_work: int | None = None) -> str:
    """The best available backend for steps of ``step_work`` multiply-adds: cupy only from
    GPU_MIN_STEP_WORK; without a size, the best CPU backend."""
    names = available_backends()
    if "cupy" in names and step_work is not None and step_work >= GPU_MIN_STEP_WORK:
        return "cupy"
    return next(n for n in names if n != "cupy")


def get_backend(name: str = "auto", *, step_work: int | None = None) -> Backend:
    """The backend called ``name`` ("auto": the best available for steps of ``step_work``
    multiply-adds, see auto_backend), or a clear error."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string such as 'numpy', got {type(name).__name__}")
    if name == "auto":
        name = auto_backend(step_work)
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown backend {name!r}: {unavailable_reason(name)}; "
            f"choose one of {', '.join(backend_names())}"
        )
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(
            f"backend {name!r} is not available: {reason}; "
            f"available here: {', '.join(available_backends())}"
        )
    if name not in _instances:
        module_name, class_name = _REGISTRY[name][0].split(":")
        _instances[name] = getattr(importlib.import_module(module_name), class_name)()
    return _instances[name]


def _version() -> str:
    from fastnn import __version__

    return __version__
