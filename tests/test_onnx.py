"""skl2onnx converts fastnn's estimators (fastnn.onnx): the graph, run by onnxruntime, predicts
what the model predicts, for each kind of target, dtype and backend, and for fastnn.accel's
estimators; fastnn registers them when skl2onnx is imported, and imports without it."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastnn import MLPClassifier, MLPRegressor
from fastnn.backends import available_backends

skl2onnx = pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]
DTYPES = ["float32", "float64"]
RTOL, ATOL = 1e-4, 1e-5  # float32's rounding: fastnn and onnxruntime sum in different orders
N = 400  # rows predicted


@pytest.fixture(scope="module")
def digits_xy():
    X, y = load_digits(return_X_y=True)
    return X / 16, y


@pytest.fixture(scope="module")
def diabetes_xy():
    X, y = load_diabetes(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y / 100


def run_onnx(model, X, options=None):
    """The model converted for X's dtype, run by onnxruntime on X: its outputs."""
    onx = skl2onnx.to_onnx(model, X[:1], options=options)
    quiet = ort.SessionOptions()
    quiet.log_severity_level = 3  # no shape-merge warnings on stderr
    session = ort.InferenceSession(
        onx.SerializeToString(), quiet, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: X})


CLASSIFICATIONS = {
    "binary": lambda y: np.where(y > 4, 7, 3),
    "multiclass": lambda y: y,
    "strings": lambda y: np.array(["cat", "dog", "emu"])[y % 3],
    "multilabel": lambda y: np.stack([y % 2, y > 4, y == 3], axis=1).astype(np.int64),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("task", list(CLASSIFICATIONS))
def test_classifier_converts_to_its_predictions(digits_xy, task, dtype, backend):
    X, y = digits_xy
    model = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=20, random_state=0,
                          dtype=dtype, backend=backend)  # fmt: skip
    model.fit(X, CLASSIFICATIONS[task](y))
    # onnxruntime has no double Binarizer (a multi-label graph's labels): float input only
    inputs = (np.float32,) if task == "multilabel" else (np.float32, np.float64)
    for input_dtype in inputs:
        Xt = X[:N].astype(input_dtype)
        labels, probs = run_onnx(model, Xt, options={"zipmap": False})
        np.testing.assert_array_equal(labels, model.predict(Xt))
        np.testing.assert_allclose(probs, model.predict_proba(Xt), rtol=RTOL, atol=ATOL)


def test_binary_graph_has_scikit_learns_one_logistic_output(digits_xy):
    X, y = digits_xy
    model = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y > 4)
    assert model.coefs_[-1].shape == (8, 2)  # fastnn: a softmax over two outputs
    onx = skl2onnx.to_onnx(model, X[:1].astype(np.float32), options={"zipmap": False})
    weights = [tuple(w.dims) for w in onx.graph.initializer if w.name.startswith("coefficient")]
    assert weights == [(64, 8), (8, 1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss, n_outputs", [("squared_error", 1), ("squared_error", 3),
                                             ("poisson", 1)])  # fmt: skip
def test_regressor_converts_to_its_predictions(diabetes_xy, loss, n_outputs, dtype, backend):
    X, y = diabetes_xy
    Y = y if n_outputs == 1 else np.stack([y, -y, y**2 / 4], axis=1)
    model = MLPRegressor(loss=loss, hidden_layer_sizes=(32, 16), activation="tanh", max_iter=30,
                         random_state=0, dtype=dtype, backend=backend).fit(X, Y)  # fmt: skip
    for input_dtype in (np.float32, np.float64):
        Xt = X.astype(input_dtype)
        (values,) = run_onnx(model, Xt)
        assert values.shape == (len(X), n_outputs)  # a column per output
        expected = model.predict(Xt).reshape(len(X), n_outputs)
        np.testing.assert_allclose(values, expected, rtol=RTOL, atol=ATOL)


def test_sigmoid_hidden_layers_convert(digits_xy):
    X, y = digits_xy
    model = MLPClassifier(hidden_layer_sizes=(8,), activation="sigmoid", max_iter=5,
                          random_state=0).fit(X, y)  # fmt: skip
    labels, probs = run_onnx(model, X[:N].astype(np.float32), options={"zipmap": False})
    np.testing.assert_allclose(probs, model.predict_proba(X[:N]), rtol=RTOL, atol=ATOL)


def test_pipeline_and_zipmap(digits_xy):
    """The classifier parser is registered: in a pipeline, and with skl2onnx's default ZipMap
    (probabilities as one {class: probability} dict per sample)."""
    X, y = digits_xy
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0)).fit(X, y)
    Xt = X[:N].astype(np.float32)
    labels, probs = run_onnx(pipe, Xt)
    np.testing.assert_array_equal(labels, pipe.predict(Xt))
    as_array = np.array([[p[c] for c in pipe.classes_] for p in probs])
    np.testing.assert_allclose(as_array, pipe.predict_proba(Xt), rtol=RTOL, atol=ATOL)


def test_accelerated_estimators_convert(digits_xy):
    from fastnn.accel.estimators import MLPClassifier as AccelClassifier
    from fastnn.accel.estimators import MLPRegressor as AccelRegressor

    X, y = digits_xy
    Xt = X[:N].astype(np.float32)
    clf = AccelClassifier(hidden_layer_sizes=(32,), max_iter=20, random_state=0).fit(X, y)
    labels, probs = run_onnx(clf, Xt, options={"zipmap": False})
    np.testing.assert_array_equal(labels, clf.predict(Xt))
    np.testing.assert_allclose(probs, clf.predict_proba(Xt), rtol=RTOL, atol=ATOL)
    targets = np.stack([y / 10, (y % 3) / 3], axis=1)  # two outputs; Poisson: non-negative
    for loss, target in (("squared_error", y / 10), ("squared_error", targets), ("poisson", y)):
        reg = AccelRegressor(loss=loss, hidden_layer_sizes=(32,), max_iter=20, random_state=0)
        reg.fit(X, target)
        (values,) = run_onnx(reg, Xt)
        expected = reg.predict(Xt).reshape(len(Xt), -1)  # a column per output
        np.testing.assert_allclose(values, expected, rtol=RTOL, atol=ATOL)
        assert reg.out_activation_ == ("exp" if loss == "poisson" else "identity")  # unchanged


def test_a_failed_registration_warns_instead_of_failing_the_import(monkeypatch):
    import fastnn.onnx

    def fail() -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(fastnn.onnx, "register", fail)
    with pytest.warns(RuntimeWarning, match="could not register.*broken"):
        fastnn.onnx._register_or_warn()


def registered() -> dict:
    """skl2onnx's alias for each of fastnn's classes (None: not registered)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map as names

    from fastnn.accel import estimators as accel

    classes = (MLPClassifier, MLPRegressor, accel.MLPClassifier, accel.MLPRegressor)
    return {cls: names.get(cls) for cls in classes}


ALIASES = ["FastnnMLPClassifier", "FastnnMLPRegressor", "SklearnMLPClassifier",
           "FastnnAccelMLPRegressor"]  # fmt: skip
FASTNN_FIRST = """
import sys
import fastnn
from fastnn.accel import estimators as accel
assert "skl2onnx" not in sys.modules, "import fastnn imported skl2onnx"
import skl2onnx
from skl2onnx._supported_operators import sklearn_operator_name_map as names
classes = (fastnn.MLPClassifier, fastnn.MLPRegressor, accel.MLPClassifier, accel.MLPRegressor)
print([names.get(cls) for cls in classes])
"""


def test_importing_skl2onnx_after_fastnn_registers():
    """In a fresh interpreter: fastnn's hook registers when skl2onnx is imported."""
    run = subprocess.run([sys.executable, "-W", "error", "-c", FASTNN_FIRST],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == repr(ALIASES)


def test_skl2onnx_imported_already_registers_now(monkeypatch):
    from skl2onnx._supported_operators import sklearn_operator_name_map as names

    import fastnn.onnx

    for cls in registered():
        monkeypatch.delitem(names, cls)
    fastnn.onnx.register_on_import()
    assert list(registered().values()) == ALIASES


def test_without_skl2onnx_nothing_is_hooked(monkeypatch, recwarn):
    import fastnn.onnx

    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # as if not installed
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    fastnn.onnx.register_on_import()
    assert not any(isinstance(f, fastnn.onnx._RegisterAfterImport) for f in sys.meta_path)
    assert not recwarn.list
