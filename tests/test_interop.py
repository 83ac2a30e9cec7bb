"""fastnn.interop: a fitted fastnn estimator as scikit-learn's estimator with the same state."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.neural_network as sknn
from sklearn.datasets import load_digits

from fastnn import MLPClassifier, MLPRegressor
from fastnn.interop import to_sklearn

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
X, Y = load_digits(return_X_y=True)
X, Y = X[:400] / 16, Y[:400]
TARGETS = {"multiclass": Y, "binary": Y % 2, "multilabel": np.stack([Y % 2, Y > 4], axis=1)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_classifier_predicts_the_same_in_scikit_learn(target, solver, dtype) -> None:
    y = TARGETS[target]
    model = MLPClassifier(hidden_layer_sizes=(9,), activation="sigmoid", solver=solver,
                          max_iter=15, random_state=0, dtype=dtype, backend="numpy")  # fmt: skip
    model.fit(X, y)
    plain = to_sklearn(model)
    assert type(plain) is sknn.MLPClassifier and plain.activation == "logistic"
    assert plain.n_outputs_ == (1 if target == "binary" else model.n_outputs_)
    atol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(plain.predict_proba(X), model.predict_proba(X), atol=atol)
    np.testing.assert_array_equal(plain.predict(X), model.predict(X))
    if solver != "lbfgs":  # scikit-learn continues from the translated optimizer state
        plain.partial_fit(X, y)
        assert plain.score(X, y) > 0


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_regressor_predicts_the_same_in_scikit_learn(loss) -> None:
    y = np.stack([Y / 10, Y % 3], axis=1)
    model = MLPRegressor(loss=loss, hidden_layer_sizes=(9,), max_iter=15, random_state=0,
                         dtype="float64", backend="numpy").fit(X, y)  # fmt: skip
    plain = to_sklearn(model)
    assert type(plain) is sknn.MLPRegressor and plain.out_activation_ == model.out_activation_
    np.testing.assert_allclose(plain.predict(X), model.predict(X), rtol=1e-12)
