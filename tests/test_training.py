"""The training loop and the estimator: batching, determinism, accuracy, API shape."""

import numpy as np
import pytest
from sklearn.base import clone

from fastnn import MLPClassifier
from fastnn.backends import get_backend
from fastnn.model import init_params
from fastnn.optim import Optimizer, init_state
from fastnn.train import train

backend = get_backend("numpy")


def _setup(rng, n=10, sizes=(6, 5, 3)):
    X = rng.normal(size=(n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n)
    params = init_params(sizes, "relu", np.float64, np.random.default_rng(0))
    return X, y, params


def test_full_batch_epoch_is_one_gradient_descent_step(rng):
    X, y, params = _setup(rng)
    expected = [p.copy() for p in params]
    _, _, grads = backend.loss_and_grads(expected, X, y, "relu")
    expected = [p - 0.1 * g for p, g in zip(expected, grads, strict=True)]
    opt = Optimizer("sgd", 0.1)
    state = init_state(backend, opt, params)
    train(
        backend,
        params,
        state,
        X,
        y,
        activation="relu",
        opt=opt,
        epochs=1,
        batch_size=len(X),
        shuffle=True,
        rng=np.random.default_rng(0),
    )
    assert state.step == 1
    for p, e in zip(params, expected, strict=True):
        np.testing.assert_allclose(p, e, rtol=1e-12)


def test_ragged_last_batch_is_used_not_dropped(rng):
    X, y, params = _setup(rng, n=10)
    manual = [p.copy() for p in params]
    opt = Optimizer("sgd", 0.05, momentum=0.9)
    mstate = init_state(backend, opt, manual)
    for start in (0, 4, 8):  # batches of 4, 4 and the ragged 2
        backend.train_step(manual, mstate, X[start : start + 4], y[start : start + 4], "relu", opt)
    state = init_state(backend, opt, params)
    history = train(
        backend,
        params,
        state,
        X,
        y,
        activation="relu",
        opt=opt,
        epochs=1,
        batch_size=4,
        shuffle=False,
        rng=np.random.default_rng(0),
    )
    assert state.step == 3 and history[0].samples == 10
    for p, m in zip(params, manual, strict=True):
        np.testing.assert_array_equal(p, m)


def test_same_seed_same_results_and_shuffling_matters(digits):
    kw = dict(hidden_layer_sizes=(20,), max_iter=3, batch_size=64, random_state=7)
    a = MLPClassifier(**kw).fit(digits.X_train, digits.y_train)
    b = MLPClassifier(**kw).fit(digits.X_train, digits.y_train)
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        np.testing.assert_array_equal(p, q)
    assert a.loss_curve_ == b.loss_curve_
    c = MLPClassifier(**kw, shuffle=False).fit(digits.X_train, digits.y_train)
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])
    d = MLPClassifier(**{**kw, "random_state": 8}).fit(digits.X_train, digits.y_train)
    assert not np.array_equal(a.coefs_[0], d.coefs_[0])


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_learns_digits(digits, activation, solver):
    lr = 0.1 if solver == "sgd" else 0.01
    model = MLPClassifier(
        (64,),
        activation=activation,
        solver=solver,
        learning_rate_init=lr,
        max_iter=40,
        batch_size=32,
        random_state=0,
    )
    model.fit(digits.X_train, digits.y_train)
    assert model.score(digits.X_test, digits.y_test) >= 0.93
    assert model.loss_curve_[-1] < model.loss_curve_[0] / 3


def test_float64_and_deep_networks(digits):
    model = MLPClassifier(
        (32, 32, 16), dtype="float64", max_iter=30, learning_rate_init=0.01, random_state=0
    ).fit(digits.X_train, digits.y_train)
    assert model.coefs_[0].dtype == np.float64 and len(model.coefs_) == 4
    assert model.score(digits.X_test, digits.y_test) >= 0.93


def test_no_hidden_layer_is_softmax_regression(digits):
    model = MLPClassifier((), max_iter=30, learning_rate_init=0.05, random_state=0)
    model.fit(digits.X_train, digits.y_train)
    assert [c.shape for c in model.coefs_] == [(64, 10)]
    assert model.score(digits.X_test, digits.y_test) >= 0.9


def test_estimator_api_shape(digits):
    labels = np.array(list("abcdefghij"))[digits.y_train]
    model = MLPClassifier((16,), max_iter=5, random_state=0, batch_size="full")
    assert clone(model).get_params() == model.get_params()
    model.fit(digits.X_train, labels)
    assert model.classes_.tolist() == list("abcdefghij")
    proba = model.predict_proba(digits.X_test)
    assert proba.shape == (len(digits.X_test), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert set(model.predict(digits.X_test)) <= set("abcdefghij")
    assert model.n_features_in_ == 64 and model.n_iter_ == 5 and len(model.loss_curve_) == 5
    assert model.t_ == 5 * len(digits.X_train)
    assert {"epoch", "loss", "accuracy", "seconds", "samples_per_second"} <= set(model.history_[0])


def test_binary_problem_uses_two_outputs(rng):
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    model = MLPClassifier((8,), max_iter=50, learning_rate_init=0.05, random_state=0).fit(X, y)
    assert model.predict_proba(X).shape == (40, 2)
    assert model.score(X, y) > 0.9


def test_verbose_prints_the_loss_per_epoch(digits, capsys):
    MLPClassifier((8,), max_iter=2, verbose=True, random_state=0).fit(
        digits.X_train, digits.y_train
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["Iteration 1", "Iteration 2"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes must be positive integers"),
        ({"activation": "gelu"}, "activation='gelu' is not supported; choose one of relu"),
        ({"solver": "newton"}, "solver='newton' is not supported; choose one of sgd, adam, lbfgs"),
        (
            {"learning_rate_init": 0},
            r"learning_rate_init=0 is out of range; expected a number in \(0",
        ),
        ({"max_iter": 0}, "max_iter=0 is invalid; expected a positive integer"),
        ({"batch_size": -5}, "batch_size=-5 is invalid; expected 'auto', 'full' or a positive"),
        ({"dtype": "float16"}, "dtype='float16' is not supported; choose one of float32, float64"),
        ({"backend": "tpu"}, "backend='tpu' is not supported; choose one of .*numpy"),
        ({"momentum": 1.5}, r"momentum=1.5 is out of range"),
    ],
)
def test_bad_parameters_are_named_in_the_error(digits, params, message):
    with pytest.raises(ValueError, match=message):
        MLPClassifier(**params).fit(digits.X_train, digits.y_train)


def test_one_class_fits_and_predicts_it(digits):
    # as scikit-learn: a y of one label is a model that always predicts it
    model = MLPClassifier((4,), max_iter=2).fit(digits.X_train[:20], np.full(20, 7))
    assert model.classes_.tolist() == [7]
    assert model.predict(digits.X_test[:5]).tolist() == [7] * 5
    np.testing.assert_array_equal(model.predict_proba(digits.X_test[:5]), np.ones((5, 1)))


def test_bad_data_errors(digits):
    model = MLPClassifier((4,), max_iter=1).fit(digits.X_train, digits.y_train)
    with pytest.raises(ValueError, match="X has 10 features, but MLPClassifier is expecting 64"):
        model.predict(np.zeros((3, 10)))


def test_progress_bar_reports_each_epoch(digits, capsys):
    MLPClassifier((8,), max_iter=2, progress=True, random_state=0).fit(
        digits.X_train, digits.y_train
    )
    out, err = capsys.readouterr()
    assert "epoch 1/2" in err and "epoch 2/2" in err and "loss=" in err and "acc=" in err
    assert out == ""


@pytest.mark.parametrize("verbose", [True, 2, 10])
def test_verbose_prints_scikit_learns_lines(digits, capsys, verbose):
    model = MLPClassifier((8,), max_iter=2, verbose=verbose, random_state=0)
    model.fit(digits.X_train, digits.y_train)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines == [f"Iteration {i}, loss = {loss:.8f}" for i, loss in
                     enumerate(model.loss_curve_, 1)]  # fmt: skip
    assert "epoch" not in err


def test_fit_scores_validation_data_and_calls_on_epoch_end(digits):
    seen = []

    def on_epoch_end(model, stats):
        seen.append((len(model.loss_curve_), stats.epoch))
        return stats.epoch == 3  # stop after the third epoch

    model = MLPClassifier((8,), max_iter=10, random_state=0)
    model.fit(digits.X_train, digits.y_train, validation_data=(digits.X_test, digits.y_test),
              on_epoch_end=on_epoch_end)  # fmt: skip
    assert seen == [(1, 1), (2, 2), (3, 3)] and model.n_iter_ == 3
    assert all(0 <= h["val_accuracy"] <= 1 and h["val_loss"] > 0 for h in model.history_)
    assert model.history_[-1]["val_accuracy"] == pytest.approx(
        model.score(digits.X_test, digits.y_test))  # fmt: skip
