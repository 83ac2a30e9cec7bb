"""fit(..., sample_weight=) as scikit-learn: each minibatch's loss is the weighted mean of its
rows' losses and alpha is over the batch's total weight, so integer weights are repeated rows
wherever the batches are the same (lbfgs, full batch), and a zero weight removes a row."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastnn import MLPClassifier
from fastnn.backends import available_backends

BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]


def _fit(X, y, sample_weight=None, **params):
    model = MLPClassifier((12,), random_state=0, dtype="float64", alpha=1e-2, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, sample_weight=sample_weight)


def _assert_same_model(a, b, rtol):
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        np.testing.assert_allclose(p, q, rtol=rtol, atol=rtol)


@pytest.fixture
def data(digits, rng):
    X, y = digits.X_train[:150], digits.y_train[:150]
    return X, y, rng.integers(0, 4, 150)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_integer_weights_are_repeated_rows(data, backend, solver):
    X, y, w = data
    full = {"batch_size": "full", "shuffle": False} if solver == "sgd" else {}
    weighted = _fit(X, y, w, solver=solver, max_iter=15, backend=backend, **full)
    repeated = _fit(np.repeat(X, w, axis=0), np.repeat(y, w), solver=solver, max_iter=15,
                    backend=backend, **full)  # fmt: skip
    _assert_same_model(weighted, repeated, 1e-6)
    assert weighted.loss_ == pytest.approx(repeated.loss_, rel=1e-6)


def test_minibatch_weights_match_numpy_on_every_backend(data):
    X, y, w = data
    models = [_fit(X, y, w, solver="adam", batch_size=32, max_iter=5, backend=b,
                   early_stopping=True) for b in BACKENDS]  # fmt: skip
    for other in models[1:]:
        _assert_same_model(other, models[0], 1e-9)
        assert other.validation_scores_ == pytest.approx(models[0].validation_scores_)


def test_unit_weights_are_no_weights(data):
    X, y, _ = data
    plain = _fit(X, y, solver="adam", batch_size=32, max_iter=5, backend="numpy")
    ones = _fit(X, y, np.ones(len(y)), solver="adam", batch_size=32, max_iter=5, backend="numpy")
    _assert_same_model(ones, plain, 1e-12)


@pytest.mark.parametrize("sample_weight, message", [
    (np.ones(3), r"shape \(3,\); it needs one weight per sample: \(150,\)"),
    (-np.ones(150), "non-negative"), (np.zeros(150), "not all zero"),
    (np.full(150, np.nan), "finite"),
])  # fmt: skip
def test_bad_sample_weight_is_named(data, sample_weight, message):
    X, y, _ = data
    with pytest.raises(ValueError, match=message):
        MLPClassifier((4,)).fit(X, y, sample_weight=sample_weight)


def test_partial_fit_and_a_scalar_weight(data):
    X, y, _ = data
    model = MLPClassifier((4,), random_state=0)
    model.partial_fit(X, y, classes=np.arange(10), sample_weight=2.0)
    assert model.n_iter_ == 1 and np.isfinite(model.loss_)
