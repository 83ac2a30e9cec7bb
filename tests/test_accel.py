"""fastnn.accel: scikit-learn's MLP classes trained by fastnn, still scikit-learn citizens.

The accelerated classes are used directly here (fastnn.accel.estimators); installing them
into scikit-learn is tested in subprocesses (and in-process with uninstall), so the rest of
the test session keeps scikit-learn's own classes.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn.neural_network as sknn
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_estimator

import fastnn.accel
from fastnn.accel import estimators as accel
from fastnn.backends import available_backends
from fastnn.estimator import MLPClassifier as FastMLPClassifier

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]
SKLEARN = {accel.MLPClassifier: sknn.MLPClassifier, accel.MLPRegressor: sknn.MLPRegressor}

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X[:600] / 16, y[:600]


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X), y / 100


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The accelerator's log records (its logger does not propagate: attach to it)."""
    logger = logging.getLogger("fastnn.accel")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.setLevel(old)
    logger.removeHandler(caplog.handler)


def _fits(log: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log.records if "fit: " in r.getMessage()]


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


# ---- scikit-learn citizens ----------------------------------------------------------------
@pytest.mark.parametrize("cls", [accel.MLPClassifier, accel.MLPRegressor])
def test_they_are_scikit_learns_classes(cls: type) -> None:
    sk = SKLEARN[cls]
    model = cls(hidden_layer_sizes=(7,), alpha=0.1)
    assert isinstance(model, sk)
    assert model.get_params() == sk(hidden_layer_sizes=(7,), alpha=0.1).get_params()
    assert type(clone(model)) is cls and repr(model) == repr(sk(hidden_layer_sizes=(7,), alpha=0.1))
    assert hasattr(cls(solver="lbfgs"), "partial_fit") == hasattr(sk(solver="lbfgs"), "partial_fit")
    assert hasattr(cls(solver="adam"), "partial_fit")


@pytest.mark.parametrize("dtype", ["", "sklearn"], ids=["float32_default", "sklearn_dtype"])
@pytest.mark.parametrize("cls", [accel.MLPClassifier, accel.MLPRegressor])
def test_scikit_learns_estimator_checks_pass(monkeypatch, cls, dtype) -> None:
    monkeypatch.setenv("FASTNN_DTYPE", dtype)
    results = check_estimator(cls(max_iter=50, random_state=0), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results if r["status"] == "failed"]
    assert len(results) > 50 and not failed


@pytest.mark.parametrize("backend", BACKENDS)
def test_fits_equal_scikit_learns_in_float64(monkeypatch, backend, digits, diabetes) -> None:
    """With scikit-learn's dtype rule the accelerated fit is scikit-learn's to 1e-9 (same
    seed, unshuffled): the attributes scikit-learn's code reads are fastnn's, translated."""
    monkeypatch.setenv("FASTNN_DTYPE", "sklearn")
    monkeypatch.setenv("FASTNN_BACKEND", backend)
    cases = [
        (accel.MLPClassifier, digits, {"solver": "adam"}),
        (accel.MLPClassifier, digits, {"solver": "adam", "early_stopping": True}),
        (accel.MLPRegressor, diabetes, {"solver": "sgd", "early_stopping": True}),
        (accel.MLPClassifier, digits, {"solver": "sgd", "learning_rate": "invscaling"}),
        (accel.MLPRegressor, diabetes, {"solver": "adam", "batch_size": 64}),
        (accel.MLPRegressor, diabetes, {"solver": "lbfgs"}),
    ]
    for cls, (X, y), params in cases:
        kwargs = dict(hidden_layer_sizes=(13,), max_iter=4, shuffle=False, random_state=3)
        ours = cls(**kwargs, **params).fit(X, y)
        theirs = SKLEARN[cls](**kwargs, **params).fit(X, y)
        for a, b in zip(
            ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        assert ours.coefs_[0].dtype == np.float64 and ours.n_iter_ == theirs.n_iter_
        assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
        if params["solver"] != "lbfgs" and not params.get("early_stopping"):
            np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
            # scikit-learn continues from the translated optimizer state exactly
            ours.partial_fit(X, y)
            theirs.partial_fit(X, y)
            np.testing.assert_allclose(ours.coefs_[-1], theirs.coefs_[-1], rtol=1e-9)
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)


def test_float32_by_default_with_scikit_learns_dtypes(log, digits) -> None:
    X, y = digits
    model = accel.MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(X, y)
    assert "fastnn (" in _fits(log)[-1] and "float32)" in _fits(log)[-1]
    assert all(a.dtype == np.float64 for a in model.coefs_ + model.intercepts_)
    assert model.predict_proba(X).dtype == np.float64 and model.score(X, y) > 0.9
    model32 = accel.MLPRegressor(max_iter=5).fit(X.astype(np.float32), y.astype(np.float32))
    assert model32.coefs_[0].dtype == np.float32
    assert model32.predict(X.astype(np.float32)).dtype == np.float32
    assert model32.predict(X).dtype == np.float64  # as scikit-learn's: float64 X, float64 out
    # predictions come from the weights kept here, so a pickled copy predicts the same
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copy.predict_proba(X), model.predict_proba(X))
    assert any("fastnn trained in float32, the weights are float64" in r.getMessage()
               for r in log.records)  # fmt: skip


def test_binary_and_multilabel_in_scikit_learns_layout(digits) -> None:
    X, y = digits
    for target, outputs in ((y % 2, 1), (np.stack([y % 2, y > 4, y < 2], axis=1), 3)):
        model = accel.MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0)
        model.fit(X, target)
        assert model.n_outputs_ == outputs and model.out_activation_ == "logistic"
        plain = sknn.MLPClassifier()  # scikit-learn's own predict over the same attributes
        plain.__dict__.update(model.__getstate__())
        np.testing.assert_allclose(plain.predict_proba(X), model.predict_proba(X), atol=1e-6)
        np.testing.assert_array_equal(plain.predict(X), model.predict(X))
        assert model.score(X, target) > 0.8  # multi-label: every label right


def test_warm_start_and_partial_fit_continue_fastnns_run(log, digits) -> None:
    X, y = digits
    kwargs = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, warm_start=True)
    model = accel.MLPClassifier(**kwargs).fit(X, y).fit(X, y)
    reference = FastMLPClassifier(**kwargs, backend=accel.fastnn_settings()["backend"])
    reference.fit(X, y).fit(X, y)
    np.testing.assert_allclose(model.coefs_[0], reference.coefs_[0], rtol=1e-6)
    model.partial_fit(X, y)
    assert len(model.loss_curve_) == 7 and all("fastnn (" in m for m in _fits(log))


# ---- fallback ---------------------------------------------------------------------------
def test_weights_set_by_hand_run_scikit_learns_code(log) -> None:
    """scikit-learn's own test_fit: weights and optimizer state injected, then partial_fit;
    fastnn did not train them, so scikit-learn continues, to its exact numbers."""
    X, y = np.array([[0.6, 0.8, 0.7]]), np.array([0])

    def prepared(cls: type) -> object:
        mlp = cls(solver="sgd", learning_rate_init=0.1, alpha=0.1, activation="logistic",
                  random_state=1, max_iter=1, hidden_layer_sizes=2, momentum=0)  # fmt: skip
        mlp.coefs_ = [np.array([[0.1, 0.2], [0.3, 0.1], [0.5, 0]]), np.array([[0.1], [0.2]])]
        mlp.intercepts_ = [np.array([0.1, 0.1]), np.array([1.0])]
        mlp.n_outputs_, mlp.n_features_in_, mlp.n_layers_, mlp.n_iter_, mlp.t_ = 1, 3, 3, 0, 0
        mlp.out_activation_, mlp.best_loss_, mlp.loss_curve_ = "logistic", np.inf, []
        mlp._no_improvement_count = 0
        return mlp

    ours, theirs = prepared(accel.MLPClassifier), prepared(sknn.MLPClassifier)
    ours.partial_fit(X, y, classes=[0, 1])
    theirs.partial_fit(X, y, classes=[0, 1])
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert (
        "scikit-learn (fallback: continuing from weights that fastnn did not train"
        in (_fits(log)[-1])
    )


def test_an_error_in_fastnn_runs_scikit_learn(monkeypatch, log, digits) -> None:
    X, y = digits

    def broken(self, *args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(FastMLPClassifier, "fit", broken)
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    ours = accel.MLPClassifier(**kwargs).fit(X, y)
    theirs = sknn.MLPClassifier(**kwargs).fit(X, y)
    np.testing.assert_array_equal(ours.coefs_[0], theirs.coefs_[0])
    assert "fallback: fastnn raised RuntimeError: simulated failure" in _fits(log)[-1]
    # its predictions too: the weights are scikit-learn's now
    np.testing.assert_array_equal(ours.predict_proba(X), theirs.predict_proba(X))
    assert "predict_proba: scikit-learn (fallback" in log.records[-1].getMessage()


@pytest.mark.parametrize(
    "params, X, y",
    [
        ({"hidden_layer_sizes": -1}, [[0.0], [1.0]], [0, 1]),
        ({"batch_size": "full"}, [[0.0], [1.0]], [0, 1]),  # fastnn's extension, not theirs
        ({"solver": "newton"}, [[0.0], [1.0]], [0, 1]),
        ({}, [[0.0, np.nan], [1.0, 2.0]], [0, 1]),
        ({}, [[0.0], [1.0]], [0.5, 1.5]),  # continuous targets for a classifier
        ({}, [[0.0], [1.0], [2.0]], [0, 1]),
    ],
)
def test_errors_are_scikit_learns_own(params, X, y) -> None:
    """Whatever fastnn would say, the caller gets scikit-learn's exception and message."""
    with pytest.raises(Exception) as theirs:
        sknn.MLPClassifier(max_iter=2, **params).fit(X, y)
    with pytest.raises(type(theirs.value)) as ours:
        accel.MLPClassifier(max_iter=2, **params).fit(X, y)
    assert str(ours.value) == str(theirs.value)


def test_one_class_and_random_state_objects_fall_back_to_scikit_learns_results(
    monkeypatch, log
) -> None:
    """A single class has no fastnn counterpart; a RandomState that fastnn's failed attempt
    drew from (its initial weights) is rewound before scikit-learn draws from it."""
    rng = np.random.RandomState(0)
    X = rng.randn(12, 3)

    def broken(self, y):
        raise RuntimeError("after the initial weights")

    for y, params in ((np.zeros(12, int), {}), (rng.randint(0, 3, 12), {"early_stopping": True})):
        if params:
            monkeypatch.setattr(FastMLPClassifier, "_targets", broken)
        ours, theirs = (
            cls(max_iter=10, random_state=np.random.RandomState(0), **params).fit(X, y)
            for cls in (accel.MLPClassifier, sknn.MLPClassifier)
        )
        assert "fallback: fastnn raised" in _fits(log)[-1]
        np.testing.assert_array_equal(ours.coefs_[0], theirs.coefs_[0])
        np.testing.assert_array_equal(ours.predict_proba(X), theirs.predict_proba(X))


def test_predictions_follow_parameters_changed_after_the_fit(monkeypatch, digits) -> None:
    monkeypatch.setenv("FASTNN_DTYPE", "sklearn")
    X, y = digits
    ours, theirs = (
        cls(hidden_layer_sizes=(8,), max_iter=5, random_state=0, shuffle=False).fit(X, y)
        for cls in (accel.MLPClassifier, sknn.MLPClassifier)
    )
    for model in (ours, theirs):
        model.set_params(activation="tanh")
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)


def test_bad_settings_fall_back_with_the_reason(monkeypatch, log, digits) -> None:
    monkeypatch.setenv("FASTNN_BACKEND", "gpu")
    accel.MLPClassifier(max_iter=2).fit(*digits)
    assert "fallback: FASTNN_BACKEND='gpu' is not a backend" in _fits(log)[-1]
    with pytest.raises(ValueError, match="FASTNN_BACKEND='gpu'"):
        fastnn.accel.install()
    assert not fastnn.accel.is_installed()
    monkeypatch.delenv("FASTNN_BACKEND")
    for name, value in (("FASTNN_DTYPE", "half"), ("FASTNN_THREADS", "0")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ValueError, match=f"{name}='{value}'"):
                accel.fastnn_settings()


def test_invalid_parameters_are_refused_before_fastnn_runs(log) -> None:
    with pytest.raises(InvalidParameterError, match="alpha"):
        accel.MLPRegressor(alpha=-1.0).fit([[0.0], [1.0]], [0.0, 1.0])
    assert not log.records


# ---- pickles, joblib, pipelines ---------------------------------------------------------
def test_pickle_holds_scikit_learns_state_only(tmp_path, digits) -> None:
    """Not installed: the pickle names scikit-learn's class and nothing of fastnn, so it loads
    (and predicts the same) where fastnn cannot even be imported."""
    X, y = digits
    model = accel.MLPClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0).fit(X, y)
    data = pickle.dumps(model)
    assert b"fastnn" not in data
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "proba.npy", model.predict_proba(X))
    script = (
        "import sys, pickle, numpy as np; sys.modules['fastnn'] = None\n"
        "m = pickle.load(open('model.pkl', 'rb'))\n"
        "import sklearn.neural_network as nn\n"
        "assert type(m) is nn.MLPClassifier, type(m)\n"
        "np.testing.assert_allclose(m.predict_proba(np.load('X.npy')), np.load('proba.npy'),"
        " atol=1e-6)\nprint('ok')\n"
    )
    result = _run(["-c", script], tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    loaded = joblib.load(joblib.dump(model, tmp_path / "m.joblib")[0])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    unfitted = pickle.dumps(GridSearchCV(accel.MLPClassifier(), {"alpha": [0.1]}))
    assert b"fastnn" not in unfitted


def test_pipeline_and_grid_search_train_on_fastnn(log, digits) -> None:
    X, y = digits
    pipe = make_pipeline(StandardScaler(), accel.MLPClassifier(max_iter=150, random_state=0))
    search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    assert search.best_score_ > 0.85 and isinstance(search.best_estimator_[-1], accel.MLPClassifier)
    fits = _fits(log)
    assert len(fits) == 5 and all("fastnn (" in m for m in fits)


def test_feature_names_follow_the_last_fit(digits) -> None:
    pd = pytest.importorskip("pandas")
    X, y = digits
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(X.shape[1])])
    model = accel.MLPClassifier(max_iter=3).fit(frame, y)
    assert list(model.feature_names_in_) == list(frame.columns)
    model.fit(X, y)
    assert not hasattr(model, "feature_names_in_")


# ---- turning it on ----------------------------------------------------------------------
def test_install_uninstall_and_the_ipython_extension(capsys) -> None:
    before = sknn.MLPClassifier(max_iter=1).fit([[0.0], [1.0]], [0, 1])  # scikit-learn's own
    try:
        fastnn.accel.load_ipython_extension(None)
        assert "now run on fastnn" in capsys.readouterr().out
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        assert MLPClassifier is accel.MLPClassifier and MLPRegressor is accel.MLPRegressor
        assert fastnn.accel.is_installed()
        data = pickle.dumps(MLPClassifier(max_iter=1).fit([[0.0], [1.0]], [0, 1]))
        assert type(pickle.loads(data)) is accel.MLPClassifier  # installed: loads accelerated
        assert type(pickle.loads(pickle.dumps(before))) is accel.SklearnMLPClassifier
    finally:
        fastnn.accel.unload_ipython_extension(None)
    assert sknn.MLPClassifier is accel.SklearnMLPClassifier and not fastnn.accel.is_installed()
    assert type(pickle.loads(data)) is sknn.MLPClassifier


SCRIPT = """
import json, pickle, sys
import numpy as np
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
import sklearn.neural_network as nn
X, y = load_digits(return_X_y=True)
m = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(X / 16, y)
pickle.dump(m, open("model.pkl", "wb"))
print(json.dumps({"argv": sys.argv[1:], "type": type(m).__module__ + "." + type(m).__name__,
                  "accelerated": type(m).__mro__[1].__module__,
                  "is_sklearn": isinstance(m, nn.MLPClassifier), "score": m.score(X / 16, y)}))
"""


def test_python_m_fastnn_accel_runs_a_script_and_a_module(tmp_path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "job.py").write_text(SCRIPT)
    for args in (["script.py", "a", "-v"], ["-m", "pkg.job", "a", "-v"]):
        result = _run(["-m", "fastnn.accel", "-v", *args], tmp_path)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["argv"] == ["a", "-v"] and out["is_sklearn"] and out["score"] > 0.9
        assert out["type"] == "sklearn.neural_network.MLPClassifier"
        assert out["accelerated"] == "fastnn.accel.estimators"
        assert "MLPClassifier.fit: fastnn (" in result.stderr
        assert "fastnn.accel: MLPClassifier.fit fastnn: 1" in result.stderr  # the summary
    # the model it pickled is a plain scikit-learn model without the accelerator
    check = "import pickle; m = pickle.load(open('model.pkl', 'rb')); print(type(m).__mro__[1])"
    assert "sklearn.base.ClassifierMixin" in _run(["-c", check], tmp_path).stdout


def test_joblib_worker_processes_train_on_fastnn_too(tmp_path) -> None:
    script = (
        "from sklearn.datasets import load_digits\n"
        "from sklearn.model_selection import GridSearchCV\n"
        "from sklearn.neural_network import MLPClassifier\n"
        "X, y = load_digits(return_X_y=True)\n"
        "GridSearchCV(MLPClassifier(max_iter=5), {'alpha': [1e-4, 1e-2]}, cv=2, n_jobs=2)"
        ".fit(X / 16, y)\n"
    )
    (tmp_path / "search.py").write_text(script)
    result = _run(["-m", "fastnn.accel", "-v", "search.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    fits = [line for line in result.stderr.splitlines() if "MLPClassifier.fit: " in line]
    assert len(fits) == 5 and all("fastnn (" in line for line in fits)  # 4 in workers, 1 refit


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "give a script to run, or -m module"),
        (["missing.py"], {}, "missing.py: no such script"),
        (["script.py"], {"FASTNN_BACKEND": "gpu"}, "FASTNN_BACKEND='gpu' is not a backend"),
        (["script.py"], {"FASTNN_ACCEL_LOG": "loud"}, "FASTNN_ACCEL_LOG='loud' is not a log"),
    ],
)
def test_python_m_fastnn_accel_refuses_bad_input_in_one_line(tmp_path, args, env, message) -> None:
    (tmp_path / "script.py").write_text("print('ran')")
    result = _run(["-m", "fastnn.accel", *args], tmp_path, **env)
    assert result.returncode == 2 and "ran" not in result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unchanged_script_same_behaviour_with_and_without(tmp_path) -> None:
    """examples/sklearn_mlp_script.py (no fastnn in it) under python -m fastnn.accel and
    plain: the same keys, classes and shapes, the same grid, accuracy and R^2 within noise
    (its speed is bench/'s accel rows)."""
    script = str(ROOT / "examples" / "sklearn_mlp_script.py")
    plain = _run([script], tmp_path)
    fast = _run(["-m", "fastnn.accel", "-v", script], tmp_path)
    assert plain.returncode == 0 and fast.returncode == 0, plain.stderr + fast.stderr
    a, b = json.loads(plain.stdout), json.loads(fast.stdout)
    assert a.keys() == b.keys() and a["digits"].keys() == b["digits"].keys()
    for key in ("classes", "proba_shape"):
        assert a["digits"][key] == b["digits"][key]
    assert a["diabetes"]["prediction_shape"] == b["diabetes"]["prediction_shape"]
    assert abs(a["digits"]["test_accuracy"] - b["digits"]["test_accuracy"]) < 0.03
    assert abs(a["diabetes"]["test_r2"] - b["diabetes"]["test_r2"]) < 0.1
    assert "scikit-learn (fallback" not in fast.stderr and "MLPRegressor.fit fastnn: 1" in (
        fast.stderr
    )
