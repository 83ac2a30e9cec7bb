"""scikit-learn's MLPClassifier and MLPRegressor, trained and run by fastnn where it can.

Each is a subclass of scikit-learn's class with scikit-learn's constructor (so ``get_params``,
``clone`` and ``isinstance`` are scikit-learn's). A fit trains a fastnn estimator, configured
from the environment (``FASTNN_BACKEND``, ``FASTNN_DTYPE``, ``FASTNN_THREADS``), and copies its
state into scikit-learn's fitted attributes (fastnn.interop); predictions come from that fastnn
estimator while the attributes still hold its weights. Anything fastnn cannot serve runs
scikit-learn's own method: a continuation of a state fastnn did not train (weights set by
hand, a model unpickled), or an error in fastnn's path, in which case scikit-learn's answer
or scikit-learn's own error is what the caller gets.

A model pickles as scikit-learn's state alone: it loads as this class where the accelerator
is installed and as scikit-learn's own class where it is not (fastnn need not be installed).
"""

from __future__ import annotations

import copyreg
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import sklearn.neural_network
from numpy.random import RandomState
from sklearn.base import _fit_context
from sklearn.utils.metaestimators import available_if

from fastnn.backends import backend_names, get_backend
from fastnn.estimator import BaseMLP
from fastnn.estimator import MLPClassifier as FastMLPClassifier
from fastnn.interop import sklearn_attributes
from fastnn.io import DTYPES
from fastnn.regressor import MLPRegressor as FastMLPRegressor

from .log import record

BACKEND_ENV, DTYPE_ENV, THREADS_ENV = "FASTNN_BACKEND", "FASTNN_DTYPE", "FASTNN_THREADS"
SKLEARN_DTYPE = "sklearn"  # scikit-learn's rule: float32 data in float32, any other in float64
# scikit-learn's classes, as imported before the accelerator replaces them
SklearnMLPClassifier = sklearn.neural_network._multilayer_perceptron.MLPClassifier
SklearnMLPRegressor = sklearn.neural_network._multilayer_perceptron.MLPRegressor
# fastnn's own state kept beside scikit-learn's; never pickled
PRIVATE = ("_fastnn_model", "_fastnn_weights", "_fastnn_layout")


def fastnn_settings(solver: str = "adam") -> dict[str, Any]:
    """fastnn's parameters from the environment (scikit-learn's constructor has no place for
    them): ``backend``, ``dtype`` and ``n_threads``; a bad value is a one-line error. The
    dtype by default is fastnn's float32 for the stochastic solvers (twice the speed) and
    scikit-learn's rule for lbfgs, whose line search and gradient tolerance need float64."""
    backend = os.environ.get(BACKEND_ENV) or "auto"
    if backend not in backend_names():
        raise ValueError(
            f"{BACKEND_ENV}={backend!r} is not a backend; use one of {', '.join(backend_names())}"
        )
    dtype = os.environ.get(DTYPE_ENV) or (SKLEARN_DTYPE if solver == "lbfgs" else "float32")
    if dtype not in (*DTYPES, SKLEARN_DTYPE):
        raise ValueError(
            f"{DTYPE_ENV}={dtype!r} is not a dtype; use {', '.join(DTYPES)} or {SKLEARN_DTYPE} "
            "(scikit-learn's rule: float32 data in float32, any other in float64)"
        )
    threads = os.environ.get(THREADS_ENV) or None
    if threads is not None and not (threads.isdigit() and int(threads) > 0):
        raise ValueError(f"{THREADS_ENV}={threads!r} is not a positive number of threads")
    return {
        "backend": backend,
        "dtype": None if dtype == SKLEARN_DTYPE else dtype,
        "n_threads": None if threads is None else int(threads),
    }


def _parent_has(method: str) -> Callable[[Any], bool]:
    """available_if's check: whether scikit-learn's class offers ``method`` to this
    estimator (partial_fit: not with lbfgs), so that hasattr answers as scikit-learn's."""

    def check(estimator: Any) -> bool:
        descriptor = vars(estimator._sklearn_class)[method]  # available_if's, unresolved
        try:
            descriptor.__get__(estimator, type(estimator))
        except AttributeError:
            return False
        return True

    return check


class _Accelerated:
    """fit, partial_fit and the predictions on fastnn, falling back to scikit-learn's."""

    _sklearn_class: type
    _fastnn_class: type[BaseMLP]
    _float_outputs: tuple[str, ...]  # methods that return floats in the weights' dtype

    # ---- training ---------------------------------------------------------------------
    def _train(self, method: str, X: Any, y: Any, **kwargs: Any) -> Any:
        call = f"{type(self).__name__}.{method}"
        t0 = time.perf_counter()
        continuing = hasattr(self, "coefs_") and (method == "partial_fit" or self.warm_start)
        reason = self._unservable(continuing)
        random_state = self.random_state  # a RandomState: as it was, for a fallback's draws
        drawn = random_state.get_state() if isinstance(random_state, RandomState) else None
        if reason is None:
            model = self._fastnn_model if continuing else None
            try:
                # numpy's overflow warnings on the way to a refusal would not be scikit-learn's
                with np.errstate(over="ignore", invalid="ignore"):
                    model = self._fastnn_estimator(model)
                    getattr(model, method)(X, y, **kwargs)
                dtype = self.coefs_[0].dtype if continuing else _sklearn_dtype(X)
                attrs = sklearn_attributes(model, dtype)  # raises where it has no counterpart
            except Exception as exc:  # noqa: BLE001 - scikit-learn's own method decides
                reason = f"fastnn raised {type(exc).__name__}: {exc}"
            else:
                self._adopt(model, attrs)
                record(call, "fastnn", _where(model), time.perf_counter() - t0)
                return self
        if drawn is not None:
            random_state.set_state(drawn)
        self._forget_fastnn()
        try:
            getattr(self._sklearn_class, method)(self, X, y, **kwargs)
        finally:  # logged also when scikit-learn raises: it was the code that ran
            record(call, "scikit-learn", f"fallback: {reason}", time.perf_counter() - t0)
        return self

    def _unservable(self, continuing: bool) -> str | None:
        """Why fastnn cannot run this fit (None: it can)."""
        try:
            fastnn_settings(self.solver)
        except ValueError as exc:
            return str(exc)
        if continuing and not self._fastnn_in_sync():
            return (
                "continuing from weights that fastnn did not train (set by hand, unpickled, or "
                "from a fit that fell back)"
            )
        return None

    def _fastnn_estimator(self, model: BaseMLP | None) -> BaseMLP:
        """The fastnn estimator with this one's parameters: ``model`` (the one that trained
        the current state) to continue, or a new one."""
        params = {**self.get_params(deep=False), **fastnn_settings(self.solver)}
        if model is None:
            return self._fastnn_class(**params)
        return model.set_params(**params)

    def _adopt(self, model: BaseMLP, attrs: dict[str, Any]) -> None:
        """Take ``model``'s fitted state as this estimator's: ``attrs``, scikit-learn's
        attributes for it (fastnn.interop)."""
        for name in ("feature_names_in_", "loss_curve_", "validation_scores_"):
            if name not in attrs and hasattr(self, name):
                delattr(self, name)  # as a fit that reset them in scikit-learn
        for name, value in attrs.items():
            setattr(self, name, value)
        self._fastnn_model = model
        self._fastnn_weights = [a.copy() for a in self.coefs_ + self.intercepts_]
        self._fastnn_layout = self._layout()

    def _layout(self) -> tuple[Any, ...]:
        """What predictions depend on besides the weights (set_params can change it)."""
        classes = getattr(self, "classes_", None)
        return (self.activation, getattr(self, "out_activation_", None),
                None if classes is None else list(classes))  # fmt: skip

    def _forget_fastnn(self) -> None:
        for name in PRIVATE:
            self.__dict__.pop(name, None)

    def _fastnn_in_sync(self) -> bool:
        """Whether the fastnn estimator still holds this estimator's weights."""
        kept = self.__dict__.get("_fastnn_weights")
        if kept is None or self.__dict__.get("_fastnn_layout") != self._layout():
            return False
        current = list(getattr(self, "coefs_", [])) + list(getattr(self, "intercepts_", []))
        return len(current) == len(kept) and all(
            isinstance(a, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
            for a, b in zip(current, kept, strict=True)
        )

    # ---- inference --------------------------------------------------------------------
    def _infer(self, method: str, X: Any) -> Any:
        call = f"{type(self).__name__}.{method}"
        t0 = time.perf_counter()
        model = self.__dict__.get("_fastnn_model")
        if not self._fastnn_in_sync():
            reason = "fallback: the weights are not from a fastnn fit in this process"
        elif model.coefs_[0].dtype != self.coefs_[0].dtype:
            # fastnn's float32 would differ in the last digits from the weights kept here (and
            # from the same model once pickled): scikit-learn's code on them, in their dtype
            reason = (
                f"fastnn trained in {model.coefs_[0].dtype}, the weights are {self.coefs_[0].dtype}"
            )
        else:
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    result = getattr(model, method)(X)
            except Exception as exc:  # noqa: BLE001 - scikit-learn's own method decides
                reason = f"fallback: fastnn raised {type(exc).__name__}: {exc}"
            else:
                record(call, "fastnn", _where(model), time.perf_counter() - t0)
                if method in self._float_outputs:  # scikit-learn's: X's and the weights' type
                    dtype = np.result_type(_sklearn_dtype(X), self.coefs_[0].dtype)
                    result = result.astype(dtype, copy=False)
                return result
        try:
            return getattr(self._sklearn_class, method)(self, X)
        finally:
            record(call, "scikit-learn", reason, time.perf_counter() - t0)

    # ---- pickling ---------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        return {k: v for k, v in state.items() if k not in PRIVATE}

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """scikit-learn's state under scikit-learn's public name (sklearn.neural_network.X):
        this class where the accelerator is installed, scikit-learn's where it is not."""
        installed = getattr(sklearn.neural_network, type(self).__name__, None) is type(self)
        cls = type(self) if installed else self._sklearn_class
        # _reconstructor, not __newobj__: pickle checks that __newobj__'s class is the object's
        return copyreg._reconstructor, (cls, object, None), self.__getstate__()


def reduce_for_worker(estimator: _Accelerated) -> tuple[Any, ...]:
    """joblib's process workers (loky's pickler, fastnn.accel.install registers this): the
    accelerated class by fastnn's name, so that a worker trains on fastnn too."""
    return _rebuild, (type(estimator).__name__,), estimator.__getstate__()


def _rebuild(name: str) -> _Accelerated:
    """An accelerated estimator for reduce_for_worker's state."""
    return object.__new__(globals()[name])


def _sklearn_dtype(X: Any) -> np.dtype:
    """The dtype scikit-learn trains on X in: float32 for float32 data, else float64."""
    dtype = getattr(X, "dtype", None)
    if dtype is None and hasattr(X, "dtypes"):  # a DataFrame: float32 if every column is
        dtype = np.float32 if all(d == np.float32 for d in X.dtypes) else None
    return np.dtype(np.float32 if dtype == np.float32 else np.float64)


def _where(model: BaseMLP) -> str:
    """The backend and dtype a fastnn estimator ran on, for the log."""
    return f"{get_backend(model.backend).name}, {model.coefs_[0].dtype}"


class MLPClassifier(_Accelerated, SklearnMLPClassifier):
    __doc__ = "fastnn-accelerated ``sklearn.neural_network.MLPClassifier`` (fastnn.accel).\n\n" + (
        SklearnMLPClassifier.__doc__ or ""
    )
    _sklearn_class = SklearnMLPClassifier
    _fastnn_class = FastMLPClassifier
    _float_outputs = ("predict_proba",)  # predict_log_proba: scikit-learn's, log of this

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        return self._train("fit", X, y, sample_weight=sample_weight)

    @available_if(_parent_has("partial_fit"))
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(
        self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None
    ) -> MLPClassifier:
        return self._train("partial_fit", X, y, sample_weight=sample_weight, classes=classes)

    def predict(self, X: Any) -> np.ndarray:
        return self._infer("predict", X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._infer("predict_proba", X)


class MLPRegressor(_Accelerated, SklearnMLPRegressor):
    __doc__ = "fastnn-accelerated ``sklearn.neural_network.MLPRegressor`` (fastnn.accel).\n\n" + (
        SklearnMLPRegressor.__doc__ or ""
    )
    _sklearn_class = SklearnMLPRegressor
    _fastnn_class = FastMLPRegressor
    _float_outputs = ("predict",)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        return self._train("fit", X, y, sample_weight=sample_weight)

    @available_if(_parent_has("partial_fit"))
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        return self._train("partial_fit", X, y, sample_weight=sample_weight)

    def predict(self, X: Any) -> np.ndarray:
        return self._infer("predict", X)


for _cls in (MLPClassifier, MLPRegressor):  # the name they take in scikit-learn, for pickles
    _cls.__module__ = sklearn.neural_network.__name__
del _cls
