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


def get_backend(name: str = "auto") -> Backend:
    """The backend called ``name`` ("auto": the best available), or a clear error."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string such as 'numpy', got {type(name).__name__}")
    if name == "auto":
        name = available_backends()[0]
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
