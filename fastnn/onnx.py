"""fastnn's estimators in skl2onnx: ``skl2onnx.to_onnx(model, X)`` converts fastnn's
``MLPClassifier`` and ``MLPRegressor``, and fastnn.accel's, with skl2onnx's own MLP converters.

skl2onnx finds a converter by a model's exact class, so each class is registered. fastnn's own
estimators are converted as the scikit-learn estimators with their weights
(fastnn.interop.to_sklearn): the graph is scikit-learn's, one logistic output for two classes.
For regressors fastnn adds what skl2onnx's MLP converter lacks: a column per output (it flattens
several outputs into one column, onnx/sklearn-onnx#474) and Poisson's exponential output.
fastnn.accel's classes hold scikit-learn's state: its classifier gets scikit-learn's converter
as it is, its regressor the same additions.

skl2onnx takes seconds to import, so ``import fastnn`` does not import it: it calls
``register_on_import()``, which registers fastnn's estimators as soon as skl2onnx is imported.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

    from skl2onnx.common._container import ModelComponentContainer
    from skl2onnx.common._topology import Operator, Scope

__all__ = ["register", "register_on_import"]

SKL2ONNX = "skl2onnx"
CLASSIFIER_ALIAS, REGRESSOR_ALIAS = "FastnnMLPClassifier", "FastnnMLPRegressor"
ACCEL_REGRESSOR_ALIAS = "FastnnAccelMLPRegressor"  # a converter is found by alias: its own
SKLEARN_CLASSIFIER_ALIAS, SKLEARN_REGRESSOR_ALIAS = "SklearnMLPClassifier", "SklearnMLPRegressor"


def register() -> None:
    """Register fastnn's MLPClassifier and MLPRegressor and fastnn.accel's with skl2onnx, so
    that ``skl2onnx.to_onnx`` converts them (idempotent; imports skl2onnx)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common._registration import get_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.operator_converters.multilayer_perceptron import (
        convert_sklearn_mlp_classifier,
        convert_sklearn_mlp_regressor,
    )

    from fastnn.accel import estimators as accel
    from fastnn.estimator import MLPClassifier
    from fastnn.regressor import MLPRegressor

    # scikit-learn's classifier options (zipmap, nocl, output_class_labels); with zipmap among
    # them skl2onnx gives the class its classifier parser (labels, probabilities, ZipMap)
    options = get_converter(SKLEARN_CLASSIFIER_ALIAS).get_allowed_options()
    update_registered_converter(
        MLPClassifier,
        CLASSIFIER_ALIAS,
        calculate_linear_classifier_output_shapes,
        _convert_classifier,
        options=options,
    )
    update_registered_converter(
        MLPRegressor, REGRESSOR_ALIAS, _regressor_shapes, _convert_regressor
    )
    # scikit-learn's state: scikit-learn's converters. Its own classes too, in case the
    # accelerator was installed before skl2onnx's import bound (and registered) its classes.
    for cls in (accel.MLPClassifier, accel.SklearnMLPClassifier):
        update_registered_converter(
            cls,
            SKLEARN_CLASSIFIER_ALIAS,
            calculate_linear_classifier_output_shapes,
            convert_sklearn_mlp_classifier,
            options=options,
        )
    update_registered_converter(  # as fastnn's: a column per output, Poisson's exponential
        accel.MLPRegressor, ACCEL_REGRESSOR_ALIAS, _regressor_shapes, _convert_regressor
    )
    update_registered_converter(
        accel.SklearnMLPRegressor,
        SKLEARN_REGRESSOR_ALIAS,
        calculate_linear_regressor_output_shapes,
        convert_sklearn_mlp_regressor,
    )


def register_on_import() -> None:
    """Register fastnn's estimators with skl2onnx once it is imported (now, if it already is),
    without importing it: ``import fastnn`` calls this. Nothing happens if it is not installed."""
    if sys.modules.get(SKL2ONNX) is not None:  # None: blocked, as if not installed
        _register_or_warn()
    elif importlib.util.find_spec(SKL2ONNX) is not None and not any(
        isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _RegisterAfterImport())


# ---- the converters ------------------------------------------------------------------------
class _AsSklearn:
    """A converter's operator as skl2onnx's MLP converters read it: the scikit-learn estimator
    with the fastnn model's weights as its raw operator, and optionally other output names."""

    def __init__(self, operator: Operator, output_full_names: Sequence[str] | None = None):
        from sklearn.base import BaseEstimator

        from fastnn.estimator import BaseMLP
        from fastnn.interop import to_sklearn

        model = operator.raw_operator
        self._operator = operator
        # a copy of a scikit-learn state (fastnn.accel's), which the converter may change
        self.raw_operator: BaseEstimator = (
            to_sklearn(model) if isinstance(model, BaseMLP) else copy.copy(model)
        )
        self.output_full_names = list(output_full_names or operator.output_full_names)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._operator, name)


def _convert_classifier(
    scope: Scope, operator: Operator, container: ModelComponentContainer
) -> None:
    """skl2onnx's MLPClassifier converter, on scikit-learn's estimator with the model's weights."""
    from skl2onnx.operator_converters.multilayer_perceptron import convert_sklearn_mlp_classifier

    convert_sklearn_mlp_classifier(scope, _AsSklearn(operator), container)


def _convert_regressor(
    scope: Scope, operator: Operator, container: ModelComponentContainer
) -> None:
    """skl2onnx's MLPRegressor converter, on scikit-learn's estimator with the model's weights,
    then its one column as a column per output, and for Poisson the exponential it lacks."""
    from skl2onnx.common._apply_operation import apply_exp, apply_reshape
    from skl2onnx.operator_converters.multilayer_perceptron import convert_sklearn_mlp_regressor

    column = scope.get_unique_variable_name("mlp_column")
    sklearn_op = _AsSklearn(operator, [column])
    model = sklearn_op.raw_operator
    exp = model.out_activation_ == "exp"
    if exp:  # a copy: the converter computes the identity, the Exp node follows
        model.out_activation_ = "identity"
    convert_sklearn_mlp_regressor(scope, sklearn_op, container)
    output = operator.outputs[0].full_name
    values = scope.get_unique_variable_name("mlp_values") if exp else output
    apply_reshape(scope, column, values, container, desired_shape=(-1, model.n_outputs_))
    if exp:
        apply_exp(scope, values, output, container)


def _regressor_shapes(operator: Operator) -> None:
    """skl2onnx's regressor output, with a column per output of the model."""
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes

    calculate_linear_regressor_output_shapes(operator)
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type.shape = [n, operator.raw_operator.n_outputs_]


# ---- registering when skl2onnx is imported ---------------------------------------------------
def _register_or_warn() -> None:
    """register(), where a failure must not fail the import of skl2onnx: a warning instead."""
    try:
        register()
    except Exception as exc:  # noqa: BLE001 - skl2onnx must still import
        warnings.warn(
            f"fastnn could not register its estimators with skl2onnx ({type(exc).__name__}: "
            f"{exc}); skl2onnx.to_onnx will not convert them",
            RuntimeWarning,
            stacklevel=2,
        )


class _RegisterAfterImport:
    """A ``sys.meta_path`` finder that finds skl2onnx as the other finders do and returns its
    spec with a loader that registers fastnn's estimators once skl2onnx's package has run."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if fullname != SKL2ONNX:
            return None
        sys.meta_path.remove(self)  # once; the lookup below goes to the other finders
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader:
    """skl2onnx's own loader, registering fastnn's estimators after the module executes."""

    def __init__(self, loader: Any):
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _register_or_warn()

    def __getattr__(self, name: str) -> Any:  # get_source, resource readers, ...
        return getattr(self._loader, name)
