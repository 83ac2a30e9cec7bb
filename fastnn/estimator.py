"""``MLPClassifier``: a scikit-learn estimator over fastnn's model, trainer and backends."""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from fastnn import __version__
from fastnn.backends import backend_names, get_backend
from fastnn.backends.base import HIDDEN_ACTIVATIONS
from fastnn.io import DTYPES, load_model_file, save_model_file
from fastnn.model import init_params, layer_sizes, predict_proba
from fastnn.optim import SOLVERS, Optimizer, init_state
from fastnn.train import EpochStats, ProgressBar, train

ACTIVATION_ALIASES = {"logistic": "sigmoid"}  # scikit-learn's name for the sigmoid


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Multilayer perceptron with a softmax output, trained by minibatch SGD or Adam.

    Parameters follow ``sklearn.neural_network.MLPClassifier`` where the meaning is the
    same; ``backend`` ("auto", "numpy", "numba", "cupy"), ``dtype`` ("float32", "float64")
    and ``n_threads`` are fastnn's. ``batch_size`` also takes "full" (full-batch gradient
    descent). ``verbose=True`` prints the loss per epoch; ``verbose=2`` shows a progress bar.
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        verbose: bool | int = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        backend: str = "auto",
        dtype: str = "float32",
        n_threads: int | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.verbose = verbose
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.backend = backend
        self.dtype = dtype
        self.n_threads = n_threads

    # ---- training -----------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train from scratch on (X, y); returns self."""
        self._check_params()
        backend = get_backend(self.backend)
        X, y = validate_data(self, X, y, dtype=self.dtype, reset=True)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has a single class ({self.classes_[0]!r}); a classifier needs at least 2"
            )
        n = X.shape[0]
        batch = self._batch_rows(n)
        rng = _generator(self.random_state)
        activation = self._activation()
        sizes = layer_sizes(X.shape[1], self._hidden(), len(self.classes_))
        params = [backend.asarray(p) for p in init_params(sizes, activation, X.dtype, rng)]
        opt = self._optimizer(batch)
        state = init_state(backend, opt, params)
        callbacks: list[Any] = []
        if self.verbose >= 2:
            callbacks.append(ProgressBar(self.max_iter))
        elif self.verbose:
            callbacks.append(_PrintLoss())
        with backend.limit_threads(self.n_threads):
            history = train(
                backend,
                params,
                state,
                backend.asarray(X),
                backend.asarray(y_idx),
                activation=activation,
                opt=opt,
                epochs=self.max_iter,
                batch_size=batch,
                shuffle=self.shuffle,
                rng=rng,
                callbacks=callbacks,
            )
        self._set_params_arrays([backend.to_numpy(p) for p in params])
        self.history_ = [h.as_dict() for h in history]
        self.loss_curve_ = [h.loss for h in history]
        self.best_loss_ = min(self.loss_curve_)
        self.n_iter_ = len(history)
        self.t_ = n * self.n_iter_
        return self

    # ---- inference ----------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one row per sample, columns in the order of ``classes_``."""
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, dtype=self.coefs_[0].dtype, reset=False)
        backend = get_backend(self.backend)
        params = [backend.asarray(p) for p in self._params_arrays()]
        with backend.limit_threads(self.n_threads):
            return predict_proba(backend, params, backend.asarray(X), self._activation())

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    # ---- files --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, metadata: dict | None = None) -> None:
        """Write the fitted model to ``path`` (.npz, atomic); ``metadata`` is kept as is."""
        check_is_fitted(self, "coefs_")
        params = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in self.get_params().items()
            if k != "random_state" or isinstance(v, int | None)
        }
        save_model_file(
            path,
            self._params_arrays(),
            {
                "fastnn_version": __version__,
                "layer_sizes": [self.n_features_in_, *self._hidden(), self.n_outputs_],
                "activation": self._activation(),
                "dtype": str(self.coefs_[0].dtype),
                "classes": self.classes_.tolist(),
                "feature_names": getattr(self, "feature_names_in_", np.array([])).tolist(),
                "estimator_params": params,
                "history": self.history_,
                "user": metadata or {},
            },
        )

    # ---- internals ----------------------------------------------------------------------
    def _params_arrays(self) -> list[np.ndarray]:
        return [p for pair in zip(self.coefs_, self.intercepts_, strict=True) for p in pair]

    def _set_params_arrays(self, params: list[np.ndarray]) -> None:
        self.coefs_ = params[0::2]
        self.intercepts_ = params[1::2]
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = self.coefs_[-1].shape[1]
        self.out_activation_ = "softmax"

    def _hidden(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral):
            return (sizes,)
        try:
            return tuple(sizes)
        except TypeError:
            raise ValueError(
                f"hidden_layer_sizes must be an integer or a sequence of them; got {sizes!r}"
            ) from None

    def _activation(self) -> str:
        return ACTIVATION_ALIASES.get(self.activation, self.activation)

    def _batch_rows(self, n: int) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size == "full":
            return n
        return min(int(self.batch_size), n)

    def _optimizer(self, batch_rows: int) -> Optimizer:
        # scikit-learn adds alpha * W / batch_rows to the weight gradient: weight decay.
        decay = self.alpha / batch_rows
        if self.solver == "adam":
            return Optimizer(
                "adam",
                self.learning_rate_init,
                beta1=self.beta_1,
                beta2=self.beta_2,
                eps=self.epsilon,
                weight_decay=decay,
            )
        return Optimizer(
            "sgd",
            self.learning_rate_init,
            momentum=self.momentum,
            nesterov=self.nesterovs_momentum and self.momentum > 0,
            weight_decay=decay,
        )

    def _check_params(self) -> None:
        """Check every constructor argument; messages name it, the value and what is accepted."""
        hidden = self._hidden()
        if not all(
            isinstance(h, numbers.Integral) and not isinstance(h, bool) and h > 0 for h in hidden
        ):
            raise ValueError(
                f"hidden_layer_sizes must be positive integers, e.g. (128,), (256, 128) or () "
                f"for none; "
                f"got {self.hidden_layer_sizes!r}"
            )
        _check_choice("activation", self.activation, (*HIDDEN_ACTIVATIONS, *ACTIVATION_ALIASES))
        _check_choice("solver", self.solver, SOLVERS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("backend", self.backend, backend_names())
        _check_number("learning_rate_init", self.learning_rate_init, low=0, low_open=True)
        _check_number("alpha", self.alpha, low=0)
        _check_number("momentum", self.momentum, low=0, high=1)
        _check_number("beta_1", self.beta_1, low=0, high=1, high_open=True)
        _check_number("beta_2", self.beta_2, low=0, high=1, high_open=True)
        _check_number("epsilon", self.epsilon, low=0, low_open=True)
        _check_integer("max_iter", self.max_iter)
        if self.n_threads is not None:
            _check_integer("n_threads", self.n_threads)
        if self.batch_size not in ("auto", "full"):
            _check_integer("batch_size", self.batch_size, "'auto', 'full' or a positive integer")


class _PrintLoss:
    """scikit-learn's ``verbose`` output: one line per epoch."""

    def on_epoch_begin(self, epoch: int, n_samples: int) -> None:
        pass

    def on_progress(self, n_rows: int) -> None:
        pass

    def on_epoch_end(self, stats: EpochStats) -> bool:
        print(f"Iteration {stats.epoch}, loss = {stats.loss:.8f}")
        return False


def load_model(path: str | os.PathLike, *, backend: str = "auto") -> MLPClassifier:
    """A fitted ``MLPClassifier`` from a file written by ``save`` (never unpickles)."""
    params, meta = load_model_file(path)
    known = MLPClassifier().get_params()
    kwargs = {k: v for k, v in meta.get("estimator_params", {}).items() if k in known}
    if "hidden_layer_sizes" in kwargs:
        kwargs["hidden_layer_sizes"] = tuple(kwargs["hidden_layer_sizes"])
    model = MLPClassifier(**{**kwargs, "backend": backend})
    model.activation = meta.get("activation", model.activation)
    model.hidden_layer_sizes = tuple(meta["layer_sizes"][1:-1])
    model._set_params_arrays(params)
    model.classes_ = np.asarray(meta["classes"])
    model.n_features_in_ = meta["layer_sizes"][0]
    if meta.get("feature_names"):
        model.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
    model.history_ = meta.get("history", [])
    model.loss_curve_ = [h["loss"] for h in model.history_]
    model.n_iter_ = len(model.history_)
    model.metadata_ = meta.get("user", {})
    return model


def _generator(random_state: Any) -> np.random.Generator:
    """A numpy Generator from scikit-learn style ``random_state`` (None, int or RandomState)."""
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(random_state)
    raise ValueError(
        f"random_state must be None, an integer or a numpy RandomState; got {random_state!r}"
    )


def _check_choice(name: str, value: Any, accepted: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(accepted)}")


def _check_number(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = float("inf"),
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(
            f"{name}={value!r} is out of range; expected a number in {lo}{low}, {high}{hi}"
        )


def _check_integer(name: str, value: Any, accepted: str = "a positive integer") -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid; expected {accepted}")
