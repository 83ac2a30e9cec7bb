"""scikit-learn's own tests of its MLP (``sklearn/neural_network/tests/test_mlp.py``, loaded
from the installed scikit-learn, never copied here) run with fastnn's MLPClassifier and
MLPRegressor in place of scikit-learn's, on each CPU backend, twice: as constructed (fastnn's
float32 default) and with ``dtype=None`` (scikit-learn's rule: float32 data in float32, any
other in float64).

The file is executed as a module of its own while ``sklearn.neural_network`` resolves to
fastnn's classes, so that its module-level names and its parametrisations (``[MLPClassifier,
MLPRegressor]``) hold fastnn's. Its tests become this module's, suffixed with the backend and
dtype. Each test expected to fail says why; the list is strict, so a test that starts passing
must be taken off it.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from pathlib import Path

import pytest
import sklearn
import sklearn.neural_network

from fastnn import MLPClassifier, MLPRegressor
from fastnn.backends import available_backends

SUITE = Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]

# tests that set or read scikit-learn's private attributes: skipped, with what they touch
PRIVATE = {
    "test_fit": "sets _coef_grads, _intercept_grads, _coef_velocity, _intercept_velocity, "
    "_no_improvement_count and t_ to inject weights and optimizer state",
    "test_learning_rate_warmstart": "reads _optimizer.learning_rate",
    "test_adaptive_learning_rate": "reads _optimizer.learning_rate",
    "test_gradient": "calls _loss_grad_lbfgs",
}
# test (name, or name[parameter id]) -> why fastnn fails it today; strict: a pass is an error
# with the default dtype (float32); with dtype=None each passes
DEFAULT_DTYPE = "float32"
DTYPES = {DEFAULT_DTYPE: DEFAULT_DTYPE, "sklearn_dtype": None}  # name in the test ids: dtype
EXPECTED_FAILURES = {
    "test_mlp_param_dtypes[": "float64 data trains in float32 (dtype='float32' is fastnn's "
    "default, for speed)",
    "test_nonfinite_params": "float32 default: X of up to 1.8e308 does not fit float32, "
    'so validate_data refuses it before training ("Input X contains infinity or a value too '
    "large for dtype('float32')\")",
}


def _preset(estimator: type, backend: str, dtype: str | None) -> type:
    """fastnn's ``estimator`` class with ``backend`` and ``dtype`` as the defaults, under a name
    of its own (so that clone and pickle find it): scikit-learn's tests construct the class
    without them."""
    defaults = {"backend": backend, "dtype": dtype}
    signature = inspect.signature(estimator.__init__)
    parameters = [
        p.replace(default=defaults[p.name]) if p.name in defaults else p
        for p in signature.parameters.values()
    ]

    def __init__(self, *args, **kwargs):
        estimator.__init__(self, *args, **{**defaults, **kwargs})

    __init__.__signature__ = signature.replace(parameters=parameters)
    name = f"{estimator.__name__}{backend.capitalize()}{str(dtype).capitalize()}"
    cls = type(name, (estimator,), {"__init__": __init__, "__module__": __name__})
    globals()[name] = cls
    return cls


def _load_suite(backend: str, dtype: str | None) -> types.ModuleType:
    """test_mlp.py executed with fastnn's classes bound to scikit-learn's names."""
    binding = types.ModuleType("sklearn.neural_network")
    binding.MLPClassifier = _preset(MLPClassifier, backend, dtype)
    binding.MLPRegressor = _preset(MLPRegressor, backend, dtype)
    spec = importlib.util.spec_from_file_location(f"sklearn_test_mlp_{backend}_{dtype}", SUITE)
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules["sklearn.neural_network"]
    sys.modules["sklearn.neural_network"] = binding
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules["sklearn.neural_network"] = saved
    return module


@pytest.fixture
def global_random_seed() -> int:
    """scikit-learn's fixture of the same name (its conftest is not loaded here): its
    default seed."""
    return 42


def mark_item(item: pytest.Item) -> None:
    """Skip or expect to fail one of scikit-learn's tests, by the lists above (called for
    each collected item by tests/conftest.py)."""
    name, configuration = item.originalname.rsplit("__", 1)
    params = item.name[len(item.originalname) :]
    if name in PRIVATE:
        item.add_marker(pytest.mark.skip(reason=f"scikit-learn's private state: {PRIVATE[name]}"))
    elif configuration.endswith(DEFAULT_DTYPE):
        for key, reason in EXPECTED_FAILURES.items():
            if key == name or (key.endswith(("[", "-")) and (name + params).startswith(key)):
                if key == "test_mlp_param_dtypes[" and "float64" not in params:
                    continue
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
                return


for _backend in BACKENDS:
    for _label, _dtype in DTYPES.items():
        for _name, _test in vars(_load_suite(_backend, _dtype)).items():
            if _name.startswith("test_") and callable(_test):
                globals()[f"{_name}__{_backend}_{_label}"] = _test
