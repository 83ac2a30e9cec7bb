"""fastnn: fast, verified multilayer perceptrons for MNIST-style data.

One set of maths (forward, the output's loss, backward, optimizer update) run by a
backend: ``numpy`` (the reference), and faster backends that must match it.
"""

__version__ = "0.1.0"

from fastnn.backends import available_backends, get_backend  # noqa: E402
from fastnn.estimator import MLPClassifier, load_model  # noqa: E402
from fastnn.onnx import register_on_import  # noqa: E402
from fastnn.regressor import MLPRegressor  # noqa: E402

register_on_import()  # skl2onnx.to_onnx converts fastnn's estimators once skl2onnx is imported

__all__ = [
    "MLPClassifier",
    "MLPRegressor",
    "__version__",
    "available_backends",
    "get_backend",
    "load_model",
]
