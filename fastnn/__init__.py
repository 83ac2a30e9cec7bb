"""fastnn: fast, verified multilayer perceptrons for MNIST-style data.

One set of maths (forward, the output's loss, backward, optimizer update) run by a
backend: ``numpy`` (the reference), and faster backends that must match it.

The public names are imported on first use (PEP 562): ``import fastnn`` stays light, so
that the command line starts, and answers Ctrl-C, before scikit-learn is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "MLPClassifier": "fastnn.estimator",
    "MLPRegressor": "fastnn.regressor",
    "available_backends": "fastnn.backends",
    "get_backend": "fastnn.backends",
    "load_model": "fastnn.estimator",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


from fastnn.onnx import register_on_import  # noqa: E402

register_on_import()  # skl2onnx.to_onnx converts fastnn's estimators once skl2onnx is imported
