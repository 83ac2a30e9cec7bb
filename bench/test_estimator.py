"""``MLPClassifier.fit``: fastnn's estimator against scikit-learn's with the same
hyperparameters, on MNIST-shaped data and on scikit-learn's digits (where per-batch overhead
dominates). Each round fits afresh with the next seed; digits rounds also report test accuracy.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from bench.conftest import settle
from bench.workloads import FIT_WORKLOADS, FitWorkload
from fastnn.backends import backend_names, unavailable_reason

IMPLEMENTATIONS = [*(f"fastnn-{b}" for b in backend_names() if b != "auto"), "sklearn"]
ROUNDS = {"fit-mnist": 3, "fit-digits": 5, "fit-digits-lbfgs": 5}


def estimator(impl: str, w: FitWorkload, seed: int):
    if impl == "sklearn":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(**w.estimator_params(seed))
    backend = impl.removeprefix("fastnn-")
    reason = unavailable_reason(backend)
    if reason:
        pytest.skip(f"{impl}: {reason}")
    from fastnn import MLPClassifier

    return MLPClassifier(**w.estimator_params(seed), backend=backend)


@pytest.fixture(scope="session")
def digits_split():
    from fastnn.data import load

    d = load("digits", seed=0)
    return d.X_train, d.y_train, d.X_test, d.y_test


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("workload", list(FIT_WORKLOADS))
def test_fit(benchmark, workload, impl, mnist_like, digits_split, record):
    w = FIT_WORKLOADS[workload]
    if w.data == "digits":
        X, y, X_test, y_test = digits_split
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
        benchmark.extra_info["test_accuracy_mean"] = mean
        note = f"test accuracy {mean:.4f} (mean of {len(fitted)} seeds)"
        assert mean > 0.9, note
    record(benchmark, w, impl, first_call, note=note)
