"""A fitted fastnn estimator in scikit-learn's own representation: the fitted attributes that
``sklearn.neural_network``'s estimators hold, so that scikit-learn's code (its predict, its
warm starts, skl2onnx's converters, the accelerator's models) runs on fastnn's weights.

One difference needs translating: fastnn gives two classes a softmax over two outputs,
scikit-learn one logistic output. softmax(z0, z1)[1] == sigmoid(z1 - z0), so the logistic
output's weights are the difference of the two columns, with the same probabilities. The
optimizer state of that layer has no exact counterpart (the two parameterisations take
different steps); it is mapped so that scikit-learn's next step is the step fastnn would take
with no L2 penalty.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier
from sklearn.neural_network import MLPRegressor as SklearnMLPRegressor
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.validation import check_is_fitted

from fastnn.estimator import ACTIVATION_ALIASES, BaseMLP

# fitted attributes with the same meaning in both; the stochastic solvers' only in their fits
COMMON = ("n_iter_", "t_", "loss_", "n_features_in_", "feature_names_in_", "classes_")
SKLEARN_ACTIVATIONS = {v: k for k, v in ACTIVATION_ALIASES.items()}  # fastnn's "sigmoid"
STOCHASTIC = ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_")


def sklearn_attributes(model: BaseMLP, dtype: Any = None) -> dict[str, Any]:
    """The fitted attributes (public and private) that scikit-learn's estimator would hold
    after the training ``model`` had, its arrays in ``dtype`` (default: the model's);
    ``model`` is not changed."""
    check_is_fitted(model, "coefs_")
    if model.out_activation_ == "softmax" and model.coefs_[-1].shape[1] == 1:
        raise ValueError(
            "a model of one class has no scikit-learn counterpart: scikit-learn trains a "
            "logistic output against the one label, fastnn a softmax over one output"
        )
    binary = _two_softmax_outputs(model)
    dtype = model.coefs_[0].dtype if dtype is None else np.dtype(dtype)
    coefs, intercepts = _layers(model.coefs_, model.intercepts_, binary, dtype)
    attrs: dict[str, Any] = {n: getattr(model, n) for n in COMMON if hasattr(model, n)}
    attrs.update(
        coefs_=coefs,
        intercepts_=intercepts,
        n_layers_=len(coefs) + 1,
        n_outputs_=coefs[-1].shape[1],
        out_activation_="logistic" if binary else model.out_activation_,
    )
    if is_classifier(model):
        attrs["_label_binarizer"] = _label_binarizer(model)
    if model.solver != "lbfgs":
        attrs.update({n: getattr(model, n) for n in STOCHASTIC})
        attrs["loss_curve_"] = list(model.loss_curve_)
        attrs["_no_improvement_count"] = model._no_improvement_count
        attrs["_optimizer"] = _optimizer(model, coefs + intercepts, binary, dtype)
    else:
        attrs.update(_packing(coefs, intercepts))
    best = getattr(model, "_best_params", None)
    best_coefs, best_intercepts = (
        (coefs, intercepts) if best is None else _layers(best[0::2], best[1::2], binary, dtype)
    )
    attrs["_best_coefs"] = [c.copy() for c in best_coefs]  # not the fitted arrays themselves
    attrs["_best_intercepts"] = [b.copy() for b in best_intercepts]
    return attrs


def to_sklearn(model: BaseMLP) -> SklearnMLPClassifier | SklearnMLPRegressor:
    """A plain scikit-learn estimator with ``model``'s parameters and fitted state: it
    predicts what ``model`` predicts (to rounding), pickles without fastnn, and converts with
    skl2onnx."""
    cls = SklearnMLPClassifier if is_classifier(model) else SklearnMLPRegressor
    names = cls._get_param_names()
    params = {n: v for n, v in model.get_params(deep=False).items() if n in names}
    params["activation"] = SKLEARN_ACTIVATIONS.get(model.activation, model.activation)
    estimator = cls(**params)
    for name, value in sklearn_attributes(model).items():
        setattr(estimator, name, value)
    return estimator


def _two_softmax_outputs(model: BaseMLP) -> bool:
    return model.out_activation_ == "softmax" and len(model.coefs_[-1][0]) == 2


def _layers(
    coefs: list[np.ndarray], intercepts: list[np.ndarray], binary: bool, dtype: np.dtype
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The weights in scikit-learn's layout, as new arrays of ``dtype``: with two softmax
    outputs, the output layer as one logistic output (the second column minus the first)."""
    coefs = [np.array(c, dtype=dtype) for c in coefs]
    intercepts = [np.array(b, dtype=dtype) for b in intercepts]
    if binary:
        coefs[-1] = coefs[-1][:, 1:] - coefs[-1][:, :1]
        intercepts[-1] = intercepts[-1][1:] - intercepts[-1][:1]
    return coefs, intercepts


def _packing(coefs: list[np.ndarray], intercepts: list[np.ndarray]) -> dict[str, list]:
    """Where each layer's weights and biases sit in L-BFGS's flat parameter vector (coefs,
    then intercepts), as scikit-learn's lbfgs fit records them."""
    coef_indptr, intercept_indptr, start = [], [], 0
    for c in coefs:
        coef_indptr.append((start, start + c.size, c.shape))
        start += c.size
    for b in intercepts:
        intercept_indptr.append((start, start + b.size))
        start += b.size
    return {"_coef_indptr": coef_indptr, "_intercept_indptr": intercept_indptr}


def _label_binarizer(model: BaseMLP) -> LabelBinarizer:
    """scikit-learn's encoder of the targets: the classes, or a multi-label y's columns."""
    labels = model.classes_
    if model.out_activation_ == "logistic":  # multi-label: an indicator with these columns
        labels = np.eye(max(len(labels), 2), len(labels), dtype=np.int64)
    return LabelBinarizer().fit(labels)


def _optimizer(model: BaseMLP, params: list[np.ndarray], binary: bool, dtype: np.dtype) -> Any:
    """scikit-learn's optimizer object over ``params`` (coefs then intercepts, its order),
    holding fastnn's step count, learning rate and per-parameter state."""
    state = model._optimizer_state
    slots = {} if state is None else state.slots

    def reorder(arrays: list[np.ndarray], combine: Any) -> list[np.ndarray]:
        weights = [np.array(a, dtype=dtype) for a in arrays[0::2]]
        biases = [np.array(a, dtype=dtype) for a in arrays[1::2]]
        if binary:  # fastnn's two output columns as the one logistic column
            weights[-1] = combine(weights[-1][:, 1:], weights[-1][:, :1])
            biases[-1] = combine(biases[-1][1:], biases[-1][:1])
        return weights + biases

    def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a - b

    def mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b) / 2

    lr = float(model.learning_rate_init)
    if model.solver == "adam":
        optimizer = AdamOptimizer(params, lr, model.beta_1, model.beta_2, model.epsilon)
        optimizer.t = 0 if state is None else state.step
        if "m" in slots:
            optimizer.ms = reorder(slots["m"], difference)
            optimizer.vs = reorder(slots["v"], mean)
        if optimizer.t:
            t = optimizer.t
            optimizer.learning_rate = lr * np.sqrt(1 - model.beta_2**t) / (1 - model.beta_1**t)
        return optimizer
    optimizer = SGDOptimizer(
        params, lr, model.learning_rate, model.momentum, model.nesterovs_momentum, model.power_t
    )
    optimizer.learning_rate = float(model._learning_rate)
    if "velocity" in slots:
        optimizer.velocities = reorder(slots["velocity"], difference)
    return optimizer
