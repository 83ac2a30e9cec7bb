"""``MLPClassifier.fit`` and ``MLPRegressor.fit``: fastnn's estimators against scikit-learn's
with the same hyperparameters, on MNIST-shaped data and on scikit-learn's small datasets
(digits, diabetes: where per-batch overhead dominates). Each round fits afresh with the next
seed; the rounds' test accuracy (classification) or R^2 (regression) is reported after timing.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from bench.conftest import settle
from bench.workloads import FIT_WORKLOADS, FitWorkload, diabetes_split, regression_like
from fastnn.backends import backend_names, unavailable_reason

IMPLEMENTATIONS = [*(f"fastnn-{b}" for b in backend_names() if b != "auto"), "sklearn"]
ROUNDS = {"fit-mnist": 3, "fit-digits": 5, "fit-digits-lbfgs": 5, "fit-regression": 3,
          "fit-diabetes": 5}  # fmt: skip
# test accuracy, or R^2 (scikit-learn's diabetes fit: 0.27; regression-like's: 0.91)
LEAST_SCORE = {"digits": 0.9, "diabetes": 0.2, "regression-like": 0.85}


def estimator(impl: str, w: FitWorkload, seed: int):
    name = "MLPRegressor" if w.regression else "MLPClassifier"
    if impl == "sklearn":
        import sklearn.neural_network

        return getattr(sklearn.neural_network, name)(**w.estimator_params(seed))
    backend = impl.removeprefix("fastnn-")
    reason = unavailable_reason(backend)
    if reason:
        pytest.skip(f"{impl}: {reason}")
    import fastnn

    return getattr(fastnn, name)(**w.estimator_params(seed), backend=backend)


@pytest.fixture(scope="session")
def digits_split():
    from fastnn.data import load

    d = load("digits", seed=0)
    return d.X_train, d.y_train, d.X_test, d.y_test


@pytest.fixture(scope="session")
def regression_split():
    return (*regression_like(seed=0), *regression_like(seed=1, n=10000))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("workload", list(FIT_WORKLOADS))
def test_fit(benchmark, workload, impl, mnist_like, digits_split, regression_split, record):
    w = FIT_WORKLOADS[workload]
    if w.data == "digits":
        X, y, X_test, y_test = digits_split
    elif w.data == "diabetes":
        X, y, X_test, y_test = diabetes_split()
    elif w.data == "regression-like":
        X, y, X_test, y_test = regression_split
    else:
        (X, y), X_test, y_test = mnist_like, None, None
    assert X.shape == (w.n_train, w.n_features)
    seeds = iter(range(1000))
    fitted = []

    def round_():
        model = estimator(impl, w, next(seeds))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the epochs are fixed
            model.fit(X, y)
        fitted.append(model)
        return model

    t0 = time.perf_counter()
    model = round_()  # warm-up (JIT compilation); reported, not timed
    first_call = time.perf_counter() - t0
    settle()
    assert model.n_iter_ == w.epochs or (w.solver == "lbfgs" and model.n_iter_ < w.epochs)
    fitted.clear()
    benchmark.group = workload
    benchmark.name = impl
    benchmark.pedantic(round_, rounds=ROUNDS[workload], iterations=1)
    note = ""
    if X_test is not None:  # scored after timing: only fit is timed, and BLAS threads that
        # spin after predict would take a core from the next round's fit
        mean = float(np.mean([m.score(X_test, y_test) for m in fitted]))
        score = "R^2" if w.regression else "accuracy"
        benchmark.extra_info[f"test_{'r2' if w.regression else 'accuracy'}_mean"] = mean
        note = f"test {score} {mean:.4f} (mean of {len(fitted)} seeds)"
        assert mean > LEAST_SCORE[w.data], note
    record(benchmark, w, impl, first_call, note=note)
