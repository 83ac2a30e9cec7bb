"""solver="lbfgs": the objective's gradient, every backend against numpy, scikit-learn's
iterates from the same start, and the estimator's stopping rules."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnMLP

from fastnn import MLPClassifier
from fastnn.backends import available_backends, get_backend
from fastnn.lbfgs import Objective, fit_lbfgs
from fastnn.model import init_params

BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]


def _problem(rng, dtype, n=23, sizes=(7, 5, 3), activation="tanh"):
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    params = init_params(sizes, activation, np.dtype(dtype), rng)
    return X, y, params


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])
def test_objective_gradient_matches_central_finite_differences(rng, activation):
    X, y, params = _problem(rng, np.float64, activation=activation)
    objective = Objective(get_backend("numpy"), params, X, y, activation, alpha=0.3)
    theta = objective.pack(params)
    value, gradient = objective(theta)
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = 1e-6
        numeric[i] = (objective(theta + step)[0] - objective(theta - step)[0]) / 2e-6
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-8)
    W = [theta[a:b] for a, b in zip(objective.starts[::2], objective.ends[::2], strict=True)]
    loss = get_backend("numpy").loss_and_grads(params, X, y, activation)[0]
    assert value == pytest.approx(loss + 0.5 * 0.3 * sum(w @ w for w in W) / X.shape[0], rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 2e-5)])
def test_objective_matches_numpy_on_every_backend(rng, backend, dtype, rtol):
    X, y, params = _problem(rng, dtype, n=1, sizes=(9, 17, 4), activation="relu")
    X, y = np.repeat(X, 37, axis=0) + rng.standard_normal((37, 9)).astype(dtype), np.repeat(y, 37)
    reference = Objective(get_backend("numpy"), params, X, y, "relu", alpha=1e-2)
    theta = reference.pack(params)
    be = get_backend(backend)
    other = Objective(be, [be.asarray(p) for p in params], be.asarray(X), be.asarray(y), "relu",
                      alpha=1e-2)  # fmt: skip
    (v0, g0), (v1, g1) = reference(theta), other(theta)
    assert v1 == pytest.approx(v0, rel=rtol)
    np.testing.assert_allclose(g1, g0, rtol=rtol, atol=rtol * np.abs(g0).max())


def test_fit_lbfgs_follows_scikit_learns_iterates(digits):
    X, y = digits.X_train[:300].astype(np.float64), digits.y_train[:300]
    sk = SklearnMLP((16,), solver="lbfgs", alpha=1e-3, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
        start = [a.copy() for pair in zip(sk.coefs_, sk.intercepts_, strict=True) for a in pair]
        sk.set_params(warm_start=True, max_iter=15).fit(X, y)
    params = [p.copy() for p in start]
    y_idx = np.searchsorted(sk.classes_, y)
    limits = {"max_iter": 15, "max_fun": 15000, "tol": 1e-4}
    result = fit_lbfgs(get_backend("numpy"), params, X, y_idx, activation="relu", alpha=1e-3,
                       **limits)  # fmt: skip
    expected = [a for pair in zip(sk.coefs_, sk.intercepts_, strict=True) for a in pair]
    for p, q in zip(params, expected, strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-8)
    assert result.loss == pytest.approx(sk.loss_, rel=1e-9)
    assert result.n_iter == sk.n_iter_


@pytest.mark.parametrize("backend", BACKENDS)
def test_lbfgs_estimator_fits_digits_and_reports_its_run(digits, backend):
    model = MLPClassifier((32,), solver="lbfgs", max_iter=100, random_state=0, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(digits.X_train, digits.y_train)
    assert model.score(digits.X_test, digits.y_test) > 0.93
    assert 1 <= model.n_iter_ <= 100 and np.isfinite(model.loss_)
    assert not hasattr(model, "partial_fit")


def test_lbfgs_warns_at_max_iter_and_max_fun(digits):
    for limits in ({"max_iter": 2}, {"max_fun": 3}):
        model = MLPClassifier((8,), solver="lbfgs", random_state=0, **limits)
        with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
            model.fit(digits.X_train, digits.y_train)
        assert model.n_iter_ <= 3


def test_lbfgs_bad_max_fun_is_named(digits):
    with pytest.raises(ValueError, match="max_fun=0"):
        MLPClassifier(solver="lbfgs", max_fun=0).fit(digits.X_train, digits.y_train)


@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_same_seed_same_fit_as_scikit_learn(digits, activation):
    # the initial weights are drawn as scikit-learn draws them, and lbfgs follows the same
    # objective: the whole fit is scikit-learn's (float64, more than two classes)
    X, y = digits.X_train[:200].astype(np.float64), digits.y_train[:200]
    params = {"hidden_layer_sizes": (10,), "solver": "lbfgs", "max_iter": 10, "random_state": 7,
              "activation": activation}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**params, dtype="float64").fit(X, y)
        theirs = SklearnMLP(**params).fit(X, y)
    for p, q in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-8)
    assert ours.n_iter_ == theirs.n_iter_
