"""Multi-label classification: an indicator y trains one logistic output per label (binary
cross-entropy, scikit-learn's ``out_activation_ == "logistic"``), on every backend."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning

from fastnn import MLPClassifier, load_model
from fastnn.backends import available_backends, get_backend

BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]


@pytest.fixture(scope="module")
def multilabel():
    return make_multilabel_classification(n_samples=120, n_classes=5, random_state=0,
                                          return_indicator=True)  # fmt: skip


def test_sigmoid_xent_matches_its_formula_and_its_gradient(rng):
    numpy = get_backend("numpy")
    z = rng.standard_normal((7, 4)) * 3
    t = (rng.random((7, 4)) > 0.5).astype(float)
    loss, grad = numpy.sigmoid_xent(z, t)
    p = 1 / (1 + np.exp(-z))
    assert loss == pytest.approx(-(t * np.log(p) + (1 - t) * np.log(1 - p)).sum() / 7, rel=1e-12)
    numeric = np.empty_like(z)
    for i in np.ndindex(z.shape):
        step = np.zeros_like(z)
        step[i] = 1e-6
        numeric[i] = (
            numpy.sigmoid_xent(z + step, t)[0] - numpy.sigmoid_xent(z - step, t)[0]
        ) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    huge = np.array([[1e4, -1e4]])
    with np.errstate(over="raise", invalid="raise"):  # no overflow, no NaN
        loss, grad = numpy.sigmoid_xent(huge, np.array([[0.0, 1.0]]))
        probs = numpy.sigmoid(huge)
    assert loss == pytest.approx(2e4) and np.isfinite(grad).all()
    np.testing.assert_array_equal(probs, [[1.0, 0.0]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_output_layer_matches_numpy_on_every_backend(rng, backend, dtype, rtol):
    be, numpy = get_backend(backend), get_backend("numpy")
    z = (rng.standard_normal((9, 5)) * 4).astype(dtype)
    t = (rng.random((9, 5)) > 0.5).astype(dtype)
    labels = rng.integers(0, 5, 9)
    for output, targets in (("logistic", t), ("softmax", labels)):
        (l0, g0), (l1, g1) = numpy.output_loss(z, targets, output), be.output_loss(
            be.asarray(z), be.asarray(targets), output)  # fmt: skip
        assert float(l1) == pytest.approx(float(l0), rel=rtol)
        np.testing.assert_allclose(be.to_numpy(g1), g0, rtol=rtol, atol=rtol * np.abs(g0).max())
        np.testing.assert_allclose(be.to_numpy(be.output_probs(be.asarray(z), output)),
                                   numpy.output_probs(z, output), rtol=rtol)  # fmt: skip
        assert int(be.hits(be.asarray(z), be.asarray(targets), output)) == int(
            numpy.hits(z, targets, output))  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_multilabel_fit_predict_and_score(multilabel, backend, solver):
    X, Y = multilabel
    steps = {"batch_size": 20, "learning_rate_init": 0.01} if solver == "adam" else {}
    model = MLPClassifier((32,), solver=solver, max_iter=300, random_state=0, backend=backend,
                          **steps)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, Y)
    assert model.out_activation_ == "logistic" and model.n_outputs_ == 5
    assert model.classes_.tolist() == [0, 1, 2, 3, 4]
    proba = model.predict_proba(X)
    assert proba.shape == Y.shape and not np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(model.predict(X), (proba > 0.5).astype(int))
    assert model.score(X, Y) > 0.9  # subset accuracy on the training rows


def test_multilabel_and_single_label_do_not_mix(multilabel, digits):
    X, Y = multilabel
    model = MLPClassifier((8,), max_iter=5, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, Y)
        with pytest.raises(ValueError, match="multi-label indicator y"):
            model.fit(X, Y.argmax(axis=1))
        with pytest.raises(ValueError, match="y has 4 labels"):
            model.partial_fit(X, Y[:, :4])
    with pytest.raises(ValueError, match="must be the columns of a multi-label y"):
        MLPClassifier((8,)).partial_fit(X, Y, classes=[1, 2, 3, 4, 5])


def test_multilabel_model_file_round_trip(multilabel, tmp_path):
    X, Y = multilabel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier((8,), max_iter=20, random_state=0).fit(X, Y)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.out_activation_ == "logistic"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))
