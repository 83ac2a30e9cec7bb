"""fastnn.MLPClassifier and MLPRegressor as drop-in scikit-learn estimators: scikit-learn's own
estimator checks, and the tools users combine them with (Pipeline, GridSearchCV,
cross_val_score, pickle/joblib)."""

import pickle
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastnn import MLPClassifier, MLPRegressor
from fastnn.backends import available_backends, get_backend

BACKENDS = [b for b in ("numpy", "numba", "cupy") if b in available_backends()]

# Checks expected to fail, with the reason (also listed in README); keep them to real reasons.
# The sample-weight equivalence checks compare weighted and repeated rows at rtol=1e-7: in
# float32 the two fits agree to rounding only (7e-7 relative), so they run in float64 too,
# where they must pass (scikit-learn runs them on its own MLP with float64 lbfgs).
FLOAT32_ROUNDING = "float32 rounding: agrees to 7e-7 relative, the check asks 1e-7"
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": FLOAT32_ROUNDING,
    "check_sample_weight_equivalence_on_sparse_data": FLOAT32_ROUNDING,
}


@parametrize_with_checks(
    [estimator(max_iter=100, backend=b, random_state=0, dtype=d, solver=solver)
     for estimator in (MLPClassifier, MLPRegressor) for b in BACKENDS
     for d in ("float32", "float64") for solver in ("adam", "lbfgs")],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS if est.dtype == "float32" else {},
)  # fmt: skip
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _fit_quietly(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*args, **kwargs)


def _same_params(a, b):
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pipeline_grid_search_and_cross_validation(backend, digits):
    # seeded: an unseeded 20-epoch run scored anywhere from 0.84 to 0.90 and failed CI once
    model = MLPClassifier(max_iter=50, backend=backend, random_state=0)
    pipe = make_pipeline(StandardScaler(), model)
    scores = cross_val_score(pipe, digits.X_train, digits.y_train, cv=3)
    assert scores.min() > 0.9
    grid = {"mlpclassifier__hidden_layer_sizes": [(16,), (32,)]}
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=2)
    search.fit(digits.X_train, digits.y_train)
    assert search.best_params_["mlpclassifier__hidden_layer_sizes"] in [(16,), (32,)]
    assert search.score(digits.X_test, digits.y_test) > 0.9


@pytest.mark.parametrize("backend", BACKENDS)
def test_pickle_and_joblib_round_trip(backend, digits, tmp_path):
    model = _fit_quietly(MLPClassifier((16,), max_iter=5, backend=backend, random_state=0),
                         digits.X_train, digits.y_train)  # fmt: skip
    expected = model.predict_proba(digits.X_test)
    again = pickle.loads(pickle.dumps(model))
    joblib.dump(model, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    for other in (again, loaded):
        np.testing.assert_array_equal(other.predict_proba(digits.X_test), expected)
        _fit_quietly(other.set_params(warm_start=True, max_iter=1), digits.X_train, digits.y_train)


def test_string_labels_and_probabilities(digits):
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])  # fmt: skip
    model = _fit_quietly(MLPClassifier((16,), max_iter=60, random_state=0), digits.X_train,
                         names[digits.y_train])  # fmt: skip
    assert sorted(model.classes_) == sorted(names) and model.classes_.dtype.kind == "U"
    proba = model.predict_proba(digits.X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert set(model.predict(digits.X_test)) <= set(names)
    np.testing.assert_allclose(np.exp(model.predict_log_proba(digits.X_test)), proba, rtol=1e-6)
    assert model.score(digits.X_test, names[digits.y_test]) > 0.85


@pytest.mark.parametrize("backend", BACKENDS)
def test_partial_fit_epochs_equal_fit_epochs(backend, digits):
    kw = dict(hidden_layer_sizes=(16,), backend=backend, random_state=3, n_iter_no_change=99)
    fitted = _fit_quietly(MLPClassifier(max_iter=3, **kw), digits.X_train, digits.y_train)
    partial = MLPClassifier(**kw)
    for _ in range(3):
        partial.partial_fit(digits.X_train, digits.y_train, classes=np.arange(10))
    _same_params(partial, fitted)
    assert partial.loss_curve_ == fitted.loss_curve_ and partial.t_ == fitted.t_
    assert partial.n_iter_ == 1  # per call, as scikit-learn


def test_partial_fit_classes_rules(digits):
    X, y = digits.X_train, digits.y_train
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X, y)
    model = MLPClassifier((8,)).partial_fit(X[y < 5], y[y < 5], classes=np.arange(10))
    model.partial_fit(X[y >= 5], y[y >= 5])  # labels first seen now, announced in classes
    assert list(model.classes_) == list(range(10)) and model.coefs_[-1].shape[1] == 10
    with pytest.raises(ValueError, match=r"labels not in classes_.*\[10\]"):
        model.partial_fit(X[:5], np.full(5, 10))
    with pytest.raises(ValueError, match="differs from the first call"):
        model.partial_fit(X, y, classes=np.arange(9))
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.arange(10))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_warm_start_continues_exactly(backend, solver, digits):
    kw = dict(hidden_layer_sizes=(16,), solver=solver, learning_rate_init=0.01, backend=backend,
              random_state=1, n_iter_no_change=99)  # fmt: skip
    once = _fit_quietly(MLPClassifier(max_iter=5, **kw), digits.X_train, digits.y_train)
    twice = _fit_quietly(MLPClassifier(max_iter=3, **kw), digits.X_train, digits.y_train)
    _fit_quietly(twice.set_params(warm_start=True, max_iter=2), digits.X_train, digits.y_train)
    _same_params(twice, once)
    assert twice.loss_curve_ == once.loss_curve_ and twice.n_iter_ == 2
    cold = _fit_quietly(clone(twice).set_params(warm_start=False), digits.X_train, digits.y_train)
    assert cold.loss_curve_ != twice.loss_curve_ and len(cold.loss_curve_) == 2


def test_stops_on_a_training_loss_plateau_without_warning(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = MLPClassifier((8,), tol=10.0, n_iter_no_change=3, max_iter=50).fit(
            digits.X_train, digits.y_train
        )
    # the first epoch sets best_loss_; then n_iter_no_change + 1 epochs fail to improve by tol
    assert model.n_iter_ == 1 + 3 + 1
    assert model.best_loss_ == min(model.loss_curve_) and model.validation_scores_ is None


def test_convergence_warning_at_max_iter(digits):
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(2\) reached"):
        MLPClassifier((8,), max_iter=2).fit(digits.X_train, digits.y_train)


@pytest.mark.parametrize("backend", BACKENDS)
def test_n_iter_no_change_inf_never_stops_and_survives_a_save(backend, digits, tmp_path):
    """n_iter_no_change=np.inf, as scikit-learn: every epoch fails to improve by a huge tol,
    and the fit still runs to max_iter (with its ConvergenceWarning); the file keeps it."""
    from fastnn import load_model

    model = MLPClassifier((8,), tol=1e9, n_iter_no_change=np.inf, max_iter=25, backend=backend)
    with pytest.warns(ConvergenceWarning):
        model.fit(digits.X_train, digits.y_train)
    assert model.n_iter_ == 25
    model.save(tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz").n_iter_no_change == np.inf


def test_batch_size_beyond_the_data_is_clipped_with_scikit_learns_warning(digits):
    X, y = digits.X_train[:50], digits.y_train[:50]
    with pytest.warns(UserWarning, match="It is going to be clipped"):
        clipped = _fit_quietly(MLPClassifier((8,), batch_size=64, max_iter=5, random_state=0),
                               X, y)  # fmt: skip
    full = _fit_quietly(MLPClassifier((8,), batch_size=50, max_iter=5, random_state=0), X, y)
    np.testing.assert_array_equal(clipped.coefs_[0], full.coefs_[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _fit_quietly(MLPClassifier((8,), batch_size=50, max_iter=5, random_state=0), X, y)


def test_warm_start_on_other_classes_raises_as_scikit_learn(digits):
    model = _fit_quietly(MLPClassifier((8,), warm_start=True, max_iter=3, random_state=0),
                         digits.X_train, digits.y_train)  # fmt: skip
    subset = digits.y_train < 5
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same"):
        model.fit(digits.X_train[subset], digits.y_train[subset])
    _fit_quietly(model, digits.X_train, digits.y_train)  # the same classes still continue


def test_early_stopping_keeps_the_best_validation_weights(digits):
    model = MLPClassifier((32,), early_stopping=True, n_iter_no_change=3, max_iter=300,
                          learning_rate_init=0.01, random_state=0)  # fmt: skip
    model.fit(digits.X_train, digits.y_train)
    assert model.n_iter_ < 300 and model.best_loss_ is None
    assert len(model.validation_scores_) == model.n_iter_ == len(model.history_)
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.validation_scores_.index(model.best_validation_score_) < model.n_iter_ - 3
    assert [h["val_accuracy"] for h in model.history_] == model.validation_scores_
    assert model.score(digits.X_test, digits.y_test) > 0.9


def test_adaptive_learning_rate_divides_by_five_then_stops(digits, capsys):
    model = MLPClassifier((8,), solver="sgd", learning_rate="adaptive", learning_rate_init=0.1,
                          tol=10.0, n_iter_no_change=1, max_iter=100, verbose=True)  # fmt: skip
    model.fit(digits.X_train, digits.y_train)
    out = capsys.readouterr().out
    assert "Setting learning rate to 0.020000" in out and "Learning rate too small" in out
    # epoch 1 sets best_loss_; every 2 epochs without improvement divide the rate by 5, and
    # 0.1 / 5**8 <= 1e-6: 8 reductions, then 2 more epochs to stop
    assert model.n_iter_ == 1 + 2 * 8 + 2


def test_invscaling_learning_rate_follows_scikit_learn(digits):
    model = _fit_quietly(MLPClassifier((8,), solver="sgd", learning_rate="invscaling",
                                       learning_rate_init=0.5, power_t=0.5, max_iter=2),
                         digits.X_train, digits.y_train)  # fmt: skip
    assert model._learning_rate == pytest.approx(0.5 / (model.t_ + 1) ** 0.5)


def test_accuracy_close_to_scikit_learn_on_digits(digits):
    from sklearn.neural_network import MLPClassifier as SkMLP

    kw = dict(hidden_layer_sizes=(64,), max_iter=100, random_state=0, n_iter_no_change=100)
    ours = _fit_quietly(MLPClassifier(**kw), digits.X_train, digits.y_train)
    theirs = _fit_quietly(SkMLP(**kw), digits.X_train, digits.y_train)
    gap = ours.score(digits.X_test, digits.y_test) - theirs.score(digits.X_test, digits.y_test)
    assert abs(gap) < 0.02


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_activation_is_a_linear_model_as_in_scikit_learn(backend, digits):
    """activation="identity": hidden layers add nothing a single linear map could not, so the
    probabilities are a softmax of one affine function of X; digits still reach scikit-learn's
    accuracy for it."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    kw = dict(hidden_layer_sizes=(32, 16), activation="identity", max_iter=60, random_state=0,
              n_iter_no_change=60)  # fmt: skip
    ours = _fit_quietly(MLPClassifier(backend=backend, **kw), digits.X_train, digits.y_train)
    W, b = np.eye(digits.X_train.shape[1]), np.zeros(digits.X_train.shape[1])
    for Wl, bl in zip(ours.coefs_, ours.intercepts_, strict=True):
        W, b = W @ Wl.astype(np.float64), b @ Wl.astype(np.float64) + bl
    probs = get_backend("numpy").softmax(digits.X_test @ W + b)
    np.testing.assert_allclose(ours.predict_proba(digits.X_test), probs, atol=1e-4)
    theirs = _fit_quietly(SkMLP(**kw), digits.X_train, digits.y_train)
    gap = ours.score(digits.X_test, digits.y_test) - theirs.score(digits.X_test, digits.y_test)
    assert abs(gap) < 0.03


def _readme_example(name: str) -> str:
    """The Python block that follows ``<!-- example: name -->`` in README.md."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    after = text.split(f"<!-- example: {name} -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_grid_search_on_a_dask_cluster(capsys):
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed")
    exec(compile(_readme_example("dask-grid-search"), "README.md", "exec"), {})
    best, score = capsys.readouterr().out.rsplit("}", 1)
    assert "hidden_layer_sizes" in best and float(score) > 0.85


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_float64_fit_is_scikit_learns(backend, solver, digits):
    """Same seed, same rows in the same order, batches of 64 with a short last one: the
    weights and loss curve of scikit-learn's fit (alpha's penalty in the loss, alpha over
    each batch's own rows), to rounding. (MLPRegressor: tests/test_regressor.py.)"""
    X, y = digits.X_train[:300].astype(np.float64), digits.y_train[:300]  # float64 in both
    kw = dict(hidden_layer_sizes=(16,), solver=solver, shuffle=False, max_iter=4, batch_size=64,
              alpha=0.01, random_state=0, momentum=0.9, learning_rate_init=0.01)  # fmt: skip
    ours = _fit_quietly(MLPClassifier(dtype="float64", backend=backend, **kw), X, y)
    theirs = _fit_quietly(SklearnMLPClassifier(**kw), X, y)
    for p, q in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    if solver != "lbfgs":
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
