"""Bad input to the estimator: one parametrised table, each case with the exact exception
type and the words its message must contain (the argument, the value, what is accepted).
Data-file and model-file cases are in test_data.py and test_io.py; CLI ones in test_cli.py."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from fastnn import MLPClassifier

rng = np.random.default_rng(0)
X = rng.random((40, 6))
Y = np.arange(40) % 3


def fit(X=X, y=Y, **params):
    return lambda: MLPClassifier(**{"max_iter": 2, **params}).fit(X, y)


def predict(X_new, **params):
    model = MLPClassifier((4,), max_iter=2, **params).fit(X, Y)
    return lambda: model.predict(X_new)


def with_value(value, row=3, col=2):
    bad = X.copy()
    bad[row, col] = value
    return bad


CASES = {
    # the data
    "X 1-D": (fit(X=X[:, 0]), ValueError, ["X must be 2-D", "1-D", "(40,)", "reshape"]),
    "X 3-D": (fit(X=X.reshape(40, 3, 2)), ValueError, ["X must be 2-D", "3-D", "(40, 3, 2)"]),
    "X NaN": (fit(X=with_value(np.nan)), ValueError, ["Input X contains NaN"]),
    "X inf": (fit(X=with_value(np.inf)), ValueError, ["Input X contains infinity"]),
    "X -inf": (fit(X=with_value(-np.inf)), ValueError, ["Input X contains infinity"]),
    "X too big for float32": (
        fit(X=with_value(1e39)),
        ValueError,
        ["infinity or a value too large"],
    ),
    "X text": (fit(X=X.astype(str).astype(object) + "px"), ValueError, ["could not convert", "px"]),
    "X empty": (fit(X=X[:0], y=Y[:0]), ValueError, ["0 sample(s)", "minimum of 1"]),
    "X no features": (fit(X=X[:, :0]), ValueError, ["0 feature(s)", "minimum of 1"]),
    "X complex": (fit(X=X + 1j), ValueError, ["Complex data not supported"]),
    "lengths differ": (fit(y=Y[:-1]), ValueError, ["inconsistent numbers of samples", "[40, 39]"]),
    "y continuous": (
        fit(y=np.linspace(0, 1, 40)),
        ValueError,
        ["Unknown label type", "continuous"],
    ),
    "y 2-D multi-output": (fit(y=np.c_[Y, Y]), ValueError, ["y should be a 1d array", "(40, 2)"]),
    "y with NaN": (fit(y=np.where(Y == 0, np.nan, Y)), ValueError, ["Input y contains NaN"]),
    # prediction
    "predict before fit": (
        lambda: MLPClassifier().predict(X),
        NotFittedError,
        ["not fitted yet", "fit"],
    ),  # fmt: skip
    "predict wrong features": (predict(X[:, :4]), ValueError, ["X has 4 features", "expecting 6"]),
    "predict 1-D": (predict(X[0]), ValueError, ["X must be 2-D", "(6,)", "reshape(1, -1)"]),
    "predict NaN": (predict(with_value(np.nan)), ValueError, ["Input X contains NaN"]),
    # the parameters
    "hidden 0": (
        fit(hidden_layer_sizes=(0,)),
        ValueError,
        ["hidden_layer_sizes", "(0,)", "positive integers"],
    ),
    "hidden negative": (
        fit(hidden_layer_sizes=(8, -2)),
        ValueError,
        ["hidden_layer_sizes", "(8, -2)", "positive"],
    ),
    "hidden text": (
        fit(hidden_layer_sizes="wide"),
        ValueError,
        ["hidden_layer_sizes", "'wide'", "positive"],
    ),
    "hidden float": (fit(hidden_layer_sizes=(2.5,)), ValueError, ["hidden_layer_sizes", "(2.5,)"]),
    "activation": (fit(activation="gelu"), ValueError, ["activation='gelu'", "relu", "tanh"]),
    "solver": (fit(solver="newton"), ValueError, ["solver='newton'", "sgd", "adam", "lbfgs"]),
    "backend": (fit(backend="tpu"), ValueError, ["backend='tpu'", "numpy", "auto"]),
    "dtype": (fit(dtype="float16"), ValueError, ["dtype='float16'", "float32", "float64"]),
    "learning rate 0": (
        fit(learning_rate_init=0.0),
        ValueError,
        ["learning_rate_init=0.0", "(0, inf)"],
    ),
    "learning rate negative": (
        fit(learning_rate_init=-0.1),
        ValueError,
        ["learning_rate_init=-0.1"],
    ),
    "learning rate NaN": (
        fit(learning_rate_init=float("nan")),
        ValueError,
        ["learning_rate_init=nan"],
    ),
    "learning rate schedule": (
        fit(learning_rate="optimal"),
        ValueError,
        ["learning_rate='optimal'", "adaptive"],
    ),
    "max_iter 0": (fit(max_iter=0), ValueError, ["max_iter=0", "positive integer"]),
    "max_iter float": (fit(max_iter=2.5), ValueError, ["max_iter=2.5", "positive integer"]),
    "batch_size 0": (fit(batch_size=0), ValueError, ["batch_size=0", "'auto', 'full'"]),
    "batch_size text": (fit(batch_size="big"), ValueError, ["batch_size='big'", "'auto', 'full'"]),
    "alpha negative": (fit(alpha=-1.0), ValueError, ["alpha=-1.0", "[0, inf)"]),
    "momentum above 1": (fit(momentum=1.5), ValueError, ["momentum=1.5", "[0, 1]"]),
    "beta_1 of 1": (fit(beta_1=1.0), ValueError, ["beta_1=1.0", "[0, 1)"]),
    "epsilon 0": (fit(epsilon=0.0), ValueError, ["epsilon=0.0", "(0, inf)"]),
    "tol negative": (fit(tol=-1e-4), ValueError, ["tol=-0.0001", "[0, inf)"]),
    "validation_fraction 1": (
        fit(validation_fraction=1.0, early_stopping=True),
        ValueError,
        ["validation_fraction=1.0", "(0, 1)"],
    ),  # fmt: skip
    "n_iter_no_change 0": (fit(n_iter_no_change=0), ValueError, ["n_iter_no_change=0", "positive"]),
    "n_threads 0": (fit(n_threads=0), ValueError, ["n_threads=0", "positive integer"]),
    "shuffle text": (fit(shuffle="yes"), ValueError, ["shuffle='yes'", "True or False"]),
    "random_state text": (fit(random_state="seed"), ValueError, ["random_state must be", "'seed'"]),
    # incremental training
    "partial_fit without classes": (
        lambda: MLPClassifier().partial_fit(X, Y),
        ValueError,
        ["classes must be passed on the first call"],
    ),  # fmt: skip
    "partial_fit unknown label": (
        lambda: MLPClassifier().partial_fit(X, Y, classes=[0, 1]),
        ValueError,
        ["labels not in classes_", "[2]"],
    ),  # fmt: skip
    "early stopping tiny validation": (
        fit(
            X=X[:6], y=np.array([0, 0, 0, 0, 0, 1]), early_stopping=True, validation_fraction=0.1
        ),  # two classes are stratified, as in scikit-learn
        ValueError,
        ["validation_fraction=0.1", "validation sample"],
    ),  # fmt: skip
}


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_with_a_clear_message(case):
    action, error, words = CASES[case]
    with pytest.raises(error) as info:
        action()
    message = str(info.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{case}: {missing} not in {message!r}"


def test_the_table_is_large_enough():
    assert len(CASES) >= 30
