"""MLPRegressor: scikit-learn's regressor, step for step, on every CPU backend: squared error
and Poisson, one or several outputs, every solver, early stopping on R^2, files."""

import warnings

import numpy as np
import pytest
import sklearn.neural_network as sk
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from fastnn import MLPClassifier, MLPRegressor, load_model
from fastnn.backends import available_backends, get_backend
from fastnn.errors import TrainingDiverged
from fastnn.model import evaluate

BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]
SOLVERS = {
    "adam": {},
    "sgd": {"momentum": 0.9, "learning_rate": "invscaling", "learning_rate_init": 0.01},
    "lbfgs": {},
}


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X), y / 100


def _quietly(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*args, **kwargs)


def _targets(y, loss, outputs):
    Y = np.c_[y, y**2, -y][:, :outputs] if outputs > 1 else y
    return np.abs(Y) if loss == "poisson" else Y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
@pytest.mark.parametrize("outputs", [1, 3])
def test_float64_fit_is_scikit_learns(diabetes, backend, solver, loss, outputs):
    """Same seed, same rows in the same order (442 rows in batches of 64, the last of 58):
    the weights, predictions and loss_ of scikit-learn's fit, to rounding."""
    X, y = diabetes
    Y = _targets(y, loss, outputs)
    kw = dict(hidden_layer_sizes=(20,), solver=solver, shuffle=False, max_iter=5, batch_size=64,
              random_state=0, **SOLVERS[solver])  # fmt: skip
    ours = _quietly(MLPRegressor(loss, dtype="float64", backend=backend, **kw), X, Y)
    theirs = _quietly(sk.MLPRegressor(loss, **kw), X, Y)
    for p, q in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    assert ours.n_outputs_ == theirs.n_outputs_ == outputs
    assert ours.out_activation_ == theirs.out_activation_
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    if solver != "lbfgs":
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_default_fits_diabetes_as_well_as_scikit_learn(diabetes, backend):
    X, y = diabetes
    ours = _quietly(MLPRegressor(max_iter=300, random_state=0, backend=backend), X, y)
    theirs = _quietly(sk.MLPRegressor(max_iter=300, random_state=0), X, y)
    assert ours.coefs_[0].dtype == np.float32
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), abs=0.02)
    assert ours.predict(X).shape == (len(y),) and ours.predict(X).dtype == np.float32


def test_predictions_of_several_outputs_are_a_matrix_and_score_is_r2(diabetes):
    X, y = diabetes
    Y = _targets(y, "squared_error", 3)
    model = _quietly(MLPRegressor(hidden_layer_sizes=(16,), max_iter=50, random_state=0), X, Y)
    predicted = model.predict(X)
    assert predicted.shape == (len(y), 3)
    assert model.score(X, Y) == pytest.approx(r2_score(Y, predicted), rel=1e-6)


def test_poisson_predictions_are_positive_and_negative_y_is_refused(diabetes):
    X, y = diabetes
    model = _quietly(MLPRegressor("poisson", hidden_layer_sizes=(8,), max_iter=20), X, np.abs(y))
    assert model.out_activation_ == "exp" and (model.predict(X) > 0).all()
    with pytest.raises(ValueError, match="loss='poisson' needs non-negative y"):
        MLPRegressor("poisson").fit(X, y - 10)


def test_poisson_without_hidden_nonlinearity_is_the_glm_in_float64():
    """scikit-learn's test_mlp_vs_poisson_glm_equivalent, in float64 (the float32 default
    misses its tolerance by rounding: tests/test_sklearn_suite.py)."""
    n = 100
    X = np.linspace(0, 1, n)
    y = np.random.default_rng(42).poisson(np.exp(X + 1))
    X = X.reshape(n, -1)
    glm = PoissonRegressor(alpha=0, tol=1e-7).fit(X, y)
    mlp = MLPRegressor("poisson", hidden_layer_sizes=(1,), activation="identity", alpha=0,
                       solver="lbfgs", tol=1e-7, random_state=np.random.RandomState(43),
                       dtype="float64").fit(X, y)  # fmt: skip
    np.testing.assert_allclose(mlp.predict(X), glm.predict(X), rtol=1e-4)


def test_huge_inputs_in_float64_diverge_with_scikit_learns_message():
    """scikit-learn's test_nonfinite_params, in float64 (float32 cannot hold the inputs)."""
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="Solver produced non-finite"):
        MLPRegressor(dtype="float64").fit(X, rng.standard_normal(10))
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged, match="epoch 1, batch 1 of"):
        MLPRegressor(dtype="float64").fit(X, rng.standard_normal(10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_early_stopping_scores_r2_and_keeps_the_best_weights(diabetes, backend):
    X, y = diabetes
    model = MLPRegressor(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=5,
                         max_iter=500, learning_rate_init=0.01, random_state=0,
                         backend=backend)  # fmt: skip
    _quietly(model, X, y)
    scores = model.validation_scores_
    assert len(scores) == model.n_iter_ < 500
    assert model.best_validation_score_ == max(scores) > 0.3
    assert [h["val_r2"] for h in model.history_] == scores
    assert all(h["accuracy"] is None and h["val_accuracy"] is None for h in model.history_)


@pytest.mark.parametrize("backend", BACKENDS)
def test_partial_fit_epochs_equal_fit_epochs(diabetes, backend):
    X, y = diabetes
    kw = dict(hidden_layer_sizes=(16,), random_state=0, backend=backend, shuffle=False)
    fitted = _quietly(MLPRegressor(max_iter=3, **kw), X, y)
    partial = MLPRegressor(**kw)
    for _ in range(3):
        partial.partial_fit(X, y)
    for p, q in zip(fitted.coefs_, partial.coefs_, strict=True):
        np.testing.assert_array_equal(p, q)
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")


def test_warm_start_refuses_other_targets_or_another_loss(diabetes):
    X, y = diabetes
    model = _quietly(MLPRegressor(hidden_layer_sizes=(8,), max_iter=2, warm_start=True), X, y)
    with pytest.raises(ValueError, match="y has 3 output"):
        model.fit(X, _targets(y, "squared_error", 3))
    with pytest.raises(ValueError, match="loss='poisson' differs"):
        model.set_params(loss="poisson").fit(X, np.abs(y))
    with pytest.raises(ValueError, match="loss='absolute' is not supported"):
        MLPRegressor("absolute").fit(X, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_regressor_loads_as_a_regressor(diabetes, backend, tmp_path):
    X, y = diabetes
    Y = _targets(y, "poisson", 3)
    model = _quietly(MLPRegressor("poisson", hidden_layer_sizes=(8,), max_iter=5,
                                  backend=backend), X, Y)  # fmt: skip
    model.save(tmp_path / "r.npz", training_state=True)
    loaded = load_model(tmp_path / "r.npz", backend=backend)
    assert type(loaded) is MLPRegressor and loaded.loss == "poisson"
    assert loaded.loss_ == model.loss_
    assert not hasattr(loaded, "classes_")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    loaded.partial_fit(X, Y)
    assert loaded.n_iter_ == 1
    classifier = _quietly(MLPClassifier((4,), max_iter=2), X, (y > 1.5).astype(int))
    classifier.save(tmp_path / "c.npz")
    assert type(load_model(tmp_path / "c.npz")) is MLPClassifier


@pytest.mark.parametrize("weighted", [False, True])
def test_evaluate_r2_is_scikit_learns(rng, weighted):
    numpy = get_backend("numpy")
    X = rng.standard_normal((50, 4))
    params = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    Y = X[:, :3] + 0.1 * rng.standard_normal((50, 3))
    Y[:, 2] = 1.0  # a constant output: 0 unless predicted exactly (force_finite)
    w = rng.random(50) if weighted else None
    _, score = evaluate(numpy, params, X, Y, "identity", "identity", w)
    expected = r2_score(Y, X @ params[0] + params[1], sample_weight=w)
    assert score == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_lbfgs_poisson_steps_past_an_overflowing_trial(backend):
    """Counts around 1300: a trial step's exp passes float32's range; evaluated again in
    float64, the line search backs off instead of stopping (it stopped at iteration 2)."""
    rng = np.random.RandomState(0)
    X = rng.randn(500, 5)
    y = rng.poisson(np.exp(7 + X @ [0.3, -0.2, 0.5, 0.1, 0.0])).astype(float)
    model = _quietly(MLPRegressor("poisson", hidden_layer_sizes=(5,), solver="lbfgs",
                                  random_state=0, backend=backend), X, y)  # fmt: skip
    assert model.n_iter_ > 50 and model.score(X, y) > 0.99


def test_targets_are_checked_against_the_model(diabetes):
    X, y = diabetes
    model = _quietly(MLPRegressor(hidden_layer_sizes=(8,), max_iter=2), X, y)
    with pytest.raises(ValueError, match="y has 3 output"):
        model.fit(X, y, validation_data=(X, np.c_[y, y, y]))
    with pytest.raises(ValueError, match="y has 3 output"):
        model.partial_fit(X, np.c_[y, y, y])
    with pytest.raises(ValueError, match=r"beyond the range of float32 .*dtype='float64'"):
        MLPRegressor(max_iter=1).fit(X, y * 1e39)


def test_a_continued_model_keeps_its_dtype(diabetes):
    """dtype=None: the first fit's data decides, as in scikit-learn; a later float32 batch
    does not lower a float64 model's precision."""
    X, y = diabetes
    model = MLPRegressor(hidden_layer_sizes=(8,), dtype=None).partial_fit(X, y)
    model.partial_fit(X.astype(np.float32), y)
    assert model.coefs_[0].dtype == np.float64
    assert model.predict(X.astype(np.float32)).dtype == np.float64


def test_ctrl_c_returns_the_model_so_far_as_scikit_learn(diabetes):
    X, y = diabetes

    def interrupt(model, stats):
        if stats.epoch == 3:
            raise KeyboardInterrupt

    model = MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        assert model.fit(X, y, on_epoch_end=interrupt) is model
    assert model.n_iter_ == 3 and np.isfinite(model.predict(X)).all()


def test_switching_early_stopping_between_warm_starts_restarts_its_bookkeeping(diabetes):
    X, y = diabetes
    model = _quietly(MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, warm_start=True), X, y)
    _quietly(model.set_params(early_stopping=True), X, y)
    assert len(model.validation_scores_) == 3 and model.best_loss_ is None
    _quietly(model.set_params(early_stopping=False), X, y)
    assert model.validation_scores_ is None and np.isfinite(model.best_loss_)


def test_early_stopping_refuses_a_split_with_all_the_weight_on_one_side(diabetes):
    X, y = diabetes
    weights = np.zeros(len(y))
    weights[0] = 1  # one row: on one side of any split
    model = MLPRegressor(early_stopping=True, validation_fraction=0.5, random_state=1)
    with pytest.raises(ValueError, match="all the sample weight on one side"):
        model.fit(X[:40], y[:40], sample_weight=weights[:40])


def test_numpy_valued_parameters_are_saved_as_numbers(diabetes, tmp_path):
    """A grid search's np.arange values: saved as JSON numbers, random_state kept."""
    X, y = diabetes
    model = MLPRegressor(hidden_layer_sizes=np.array([5]), batch_size=np.int64(10),
                         alpha=np.float32(0.001), max_iter=np.int64(2), early_stopping=np.True_,
                         random_state=np.int64(3))  # fmt: skip
    _quietly(model, X, y)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    params = loaded.get_params()
    assert params["batch_size"] == 10 and params["random_state"] == 3
    assert params["hidden_layer_sizes"] == (5,) and params["early_stopping"] is True
