"""Optional packages and devices, probed once, in one place."""

from __future__ import annotations

import functools
import importlib.util


@functools.cache
def has_numba() -> bool:
    """True when numba is importable."""
    return importlib.util.find_spec("numba") is not None


@functools.cache
def has_cupy() -> bool:
    """True when cupy is importable."""
    return importlib.util.find_spec("cupy") is not None


@functools.cache
def cuda_device_problem() -> str | None:
    """None when CuPy can run a kernel on a CUDA device, else why it cannot."""
    if not has_cupy():
        return (
            "CuPy is not installed (pip install 'fastnn[gpu]' for CUDA 12, "
            "'fastnn[gpu-cuda13]' for CUDA 13)"
        )
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA device"
        int((cupy.arange(4) + 1).sum())  # a real launch: drivers can list a device yet fail here
    except Exception as exc:  # noqa: BLE001 - any CUDA/driver failure means "no usable device"
        return f"CuPy cannot use a CUDA device: {str(exc).splitlines()[0]}"
    return None


def has_cuda_device() -> bool:
    """True when CuPy is installed and a CUDA device actually runs a kernel."""
    return cuda_device_problem() is None
