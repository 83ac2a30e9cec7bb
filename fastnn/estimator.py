"""``MLPClassifier``: a scikit-learn estimator over fastnn's model, trainer and backends."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import Tags, check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from fastnn import __version__
from fastnn.backends import backend_names, get_backend
from fastnn.backends.base import HIDDEN_ACTIVATIONS, REGRESSION_OUTPUTS
from fastnn.errors import ModelFileError, TrainingDiverged
from fastnn.io import DTYPES, load_model_file, save_model_file
from fastnn.lbfgs import fit_lbfgs
from fastnn.model import chunk_rows, init_params, layer_sizes, predict_proba
from fastnn.optim import SOLVERS, Optimizer, OptimizerState, init_state
from fastnn.schedule import SCHEDULES, Schedule
from fastnn.train import EpochStats, ProgressBar, train
from fastnn.warmup import announce_compiles

ACTIVATION_ALIASES = {"logistic": "sigmoid"}  # scikit-learn's name for the sigmoid
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")  # restorable generators
LEARNING_RATES = ("constant", "invscaling", "adaptive")  # schedules; sgd only, as scikit-learn


class DivergenceWarning(ConvergenceWarning):
    """Training diverged after early stopping had a best epoch, whose weights the model keeps,
    as scikit-learn's; ``diverged`` is the divergence, for callers that treat it as an error
    (the CLI)."""

    def __init__(self, message: str, diverged: TrainingDiverged) -> None:
        super().__init__(message)
        self.diverged = diverged


class BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share (scikit-learn's BaseMultilayerPerceptron):
    the parameters, training by minibatch SGD or Adam (or L-BFGS), early stopping, files.

    Parameters follow ``sklearn.neural_network``'s estimators where the meaning is the
    same (README lists the differences); ``backend`` ("auto" or one of
    ``fastnn.backends.backend_names()``), ``dtype`` ("float32", "float64", or None for
    scikit-learn's rule: float32 data in float32, any other in float64) and ``n_threads`` are
    fastnn's. ``batch_size`` also takes "full" (full-batch gradient descent). ``verbose``
    prints scikit-learn's "Iteration N, loss = ..." line per epoch; ``progress=True``
    (fastnn's) draws a progress bar on stderr. ``warm_up_seconds_`` is the time the last fit
    spent before its first epoch compiling (or loading) the backend's kernels.

    fastnn's regularisation and schedules, for the stochastic solvers: ``dropout`` drops
    this share of every hidden layer's units in each training step (inverted dropout, off
    at inference; masks from fastnn.dropout's hash of a seed drawn once per model, the step
    and the unit, so every backend and a resumed fit draw the same); ``lr_schedule``
    ("constant", "cosine", "onecycle": fastnn.schedule) scales ``learning_rate_init`` per
    update, after ``warmup_epochs`` of linear warm-up (onecycle: of rise), over each fit's
    ``max_iter`` epochs (a warm start starts a new schedule; partial_fit calls share the
    first one's), or over ``schedule_epochs`` epochs from the model's first update, across
    warm starts (how a resumed run continues); past its end the rate stays at its last
    value. They replace
    scikit-learn's ``learning_rate`` schedules, which must then stay "constant".
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        backend: str = "auto",
        dtype: str | None = "float32",
        n_threads: int | None = None,
        progress: bool = False,
        dropout: float = 0.0,
        lr_schedule: str = "constant",
        warmup_epochs: float = 0.0,
        schedule_epochs: int | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype
        self.n_threads = n_threads
        self.progress = progress
        self.dropout = dropout
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.schedule_epochs = schedule_epochs

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified a minibatch at a time (dense_rows)
        return tags

    # ---- training -----------------------------------------------------------------------
    def fit(
        self, X: Any, y: Any, sample_weight: Any = None, *,
        validation_data: tuple[Any, Any] | None = None,
        on_epoch_end: Callable[[Any, EpochStats], bool] | None = None,
    ) -> BaseMLP:  # fmt: skip
        """Train on (X, y) for up to ``max_iter`` epochs; from scratch, or from the fitted
        state (weights, optimizer state, random generator) when ``warm_start``. With
        ``sample_weight`` each minibatch's loss is the weighted mean of its rows' losses, as
        in scikit-learn.

        fastnn's, for the stochastic solvers: ``validation_data`` (X, y) is scored after every
        epoch into ``history_``; with ``early_stopping`` it is the held-out set (instead of a
        ``validation_fraction`` of X) whose best score's weights are kept and whose plateau
        stops training; ``on_epoch_end(model, stats)`` is called
        after every epoch with the model holding that epoch's state, and stops the training
        by returning True (the CLI's checkpoints and Ctrl-C)."""
        return self._fit(X, y, incremental=False, classes=None, sample_weight=sample_weight,
                         validation_data=validation_data, on_epoch_end=on_epoch_end)  # fmt: skip

    def _fit(
        self, X: Any, y: Any, *, incremental: bool, classes: Any = None, sample_weight: Any = None,
        validation_data: tuple[Any, Any] | None = None,
        on_epoch_end: Callable[[Any, EpochStats], bool] | None = None,
    ) -> BaseMLP:  # fmt: skip
        self._check_params()
        if incremental and self.early_stopping:
            raise ValueError(
                "partial_fit does not support early_stopping=True: set early_stopping=False, "
                "or use fit"
            )
        first = not hasattr(self, "coefs_") or not (incremental or self.warm_start)
        _check_2d(X)
        dtype = self._input_dtype() if first else self.coefs_[0].dtype  # a model keeps its own
        X, y = self._validate_xy(X, y, reset=first, dtype=dtype)
        weights = None if sample_weight is None else _check_weights(sample_weight, X.shape[0])
        if weights is not None and (weights == 1).all():  # the same sums, on the faster path
            weights = None
        # scikit-learn's RandomState of this fit: initial weights, then early stopping's split
        random_state = check_random_state(self.random_state)
        if first:
            self._initialize(X, self._start(y, classes if incremental else None), random_state)
        else:
            self._check_continuation(y, incremental, classes)
            if not incremental:  # warm start: a new run of max_iter epochs, as scikit-learn
                self._learning_rate = float(self.learning_rate_init)
                self._schedule_span = None  # and its schedule: _schedule
            if self.early_stopping != (self.validation_scores_ is not None):  # switched
                self._reset_stopping()
        y_idx = self._targets(y)
        rows = X.shape[0] if self.solver == "lbfgs" else self._batch_rows(X.shape[0], warn=False)
        backend = get_backend(self.backend, step_work=rows * _n_weights(self.coefs_))
        if self.solver == "lbfgs":  # early_stopping does not apply, as in scikit-learn
            return self._fit_lbfgs(backend, X, y_idx, weights)

        X_val = y_val = w_val = None
        if validation_data is not None:  # scored; with early_stopping, the held-out set
            X_val, y_val = self._validate_xy(*validation_data, reset=False, dtype=X.dtype)
            y_val = self._targets(y_val)
        elif self.early_stopping:
            X, X_val, y_idx, y_val, weights, w_val = self._split_validation(
                X, y_idx, weights, random_state
            )
        n = X.shape[0]
        batch = self._batch_rows(n)
        activation = self._activation()
        if self.dropout and self._dropout_seed is None:  # once per model: resumes draw alike
            self._dropout_seed = int(self._rng.integers(2**32))
        opt = self._optimizer(-(-n // batch))
        params = [backend.asarray(p, dtype=X.dtype) for p in self._params_arrays()]
        state = self._resume_state(backend, opt, params)
        X, y_idx = _on_backend(backend, X), backend.asarray(y_idx)
        validation = None
        if X_val is not None:
            validation = (_on_backend(backend, X_val), backend.asarray(y_val))
            if w_val is not None:
                validation += (backend.asarray(w_val, dtype=X.dtype),)
        if weights is not None:
            weights = backend.asarray(weights, dtype=X.dtype)
        callbacks: list[Any] = []
        if self.progress:
            epochs = 1 if incremental else self.max_iter
            callbacks.append(ProgressBar(len(self.loss_curve_) + epochs))
        if self.verbose:
            callbacks.append(_PrintLoss())

        self.n_iter_ = 0
        stopped = False
        try:
            with backend.limit_threads(self.n_threads):
                self._warm_up(backend, params, state, X, y_idx, weights, batch, activation, opt)
                for _ in range(1 if incremental else self.max_iter):
                    if opt.lr != self._learning_rate:  # "adaptive" lowers it
                        opt = dataclasses.replace(opt, lr=self._learning_rate)
                    try:
                        (stats,) = train(
                            backend, params, state, X, y_idx, activation=activation, opt=opt,
                            epochs=1, batch_size=batch, shuffle=self.shuffle, rng=self._rng,
                            first_epoch=len(self.loss_curve_) + 1, callbacks=callbacks,
                            validation=validation, output=self.out_activation_, weights=weights,
                        )  # fmt: skip
                    except TrainingDiverged as exc:
                        if self._best_params is None:
                            raise
                        # as scikit-learn: early stopping keeps its best weights, no error, and
                        # the diverged epoch scores NaN
                        self.validation_scores_.append(float("nan"))
                        kept = "early stopping keeps the weights of the best validation score"
                        warnings.warn(DivergenceWarning(f"{exc}; {kept}", exc), stacklevel=3)
                        stopped = True
                        break
                    self.n_iter_ += 1
                    self.t_ += n
                    self.loss_ = stats.loss
                    self.loss_curve_.append(stats.loss)
                    self.history_.append(stats.as_dict())
                    stopped = self._converged(stats, backend, params)
                    if on_epoch_end is not None:  # it sees the state of this epoch
                        self._keep_state(backend, params, state)
                        stopped = on_epoch_end(self, stats) or stopped
                    if stopped:
                        break
        except KeyboardInterrupt:  # as scikit-learn: the model so far, best weights restored
            warnings.warn("Training interrupted by user.", stacklevel=3)
            stopped = True
        finally:  # also after a divergence, which leaves the last finite parameters
            self._keep_state(backend, params, state)
        if self.early_stopping and self._best_params is not None:
            self._set_params_arrays([p.copy() for p in self._best_params])
        if not incremental and not stopped and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _fit_lbfgs(
        self, backend: Any, X: np.ndarray, y_idx: np.ndarray, weights: np.ndarray | None
    ) -> BaseMLP:
        """Full-batch L-BFGS-B from the current weights (fastnn.lbfgs): ``max_iter``
        iterations at most, ``max_fun`` loss evaluations, ``tol`` on the gradient."""
        params = [backend.asarray(p, dtype=X.dtype) for p in self._params_arrays()]
        self.warm_up_seconds_ = 0.0  # no kernel to compile ahead: BLAS and epilogues
        with backend.limit_threads(self.n_threads):
            result = fit_lbfgs(
                backend, params, _on_backend(backend, X), backend.asarray(y_idx),
                activation=self._activation(), output=self.out_activation_, alpha=self.alpha,
                max_iter=self.max_iter, max_fun=self.max_fun, tol=self.tol,
                weights=None if weights is None else backend.asarray(weights, dtype=X.dtype),
            )  # fmt: skip
        self._set_params_arrays([backend.to_numpy(p) for p in params])
        self.n_iter_ = result.n_iter
        self.loss_ = result.loss
        self.t_ += X.shape[0] * result.n_iter
        if self.verbose:
            print(f"L-BFGS-B: {result.n_iter} iterations, {result.n_evaluations} loss "
                  f"evaluations, loss = {result.loss:.8f}: {result.message}")  # fmt: skip
        if not result.converged:
            warnings.warn(
                f"lbfgs failed to converge after {result.n_iter} iteration(s) "
                f"({result.message}). Increase the number of iterations (max_iter) or the "
                "number of loss evaluations (max_fun), or scale the data.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _warm_up(
        self, backend: Any, params: list[Any], state: OptimizerState, X: Any, y_idx: Any,
        weights: Any, batch: int, activation: str, opt: Optimizer,
    ) -> None:  # fmt: skip
        """Compile the run's kernels before its first timed epoch (``Backend.warm_up``), so
        that ``history_``'s seconds are training only, and time it in ``warm_up_seconds_``;
        with ``verbose`` a compilation is announced, once per process."""
        t0 = time.perf_counter()
        with announce_compiles(bool(self.verbose)):
            backend.warm_up(params, state, X, y_idx, batch, activation, opt, self.out_activation_,
                            weights)  # fmt: skip
        self.warm_up_seconds_ = time.perf_counter() - t0

    def _keep_state(self, backend: Any, params: list[Any], state: OptimizerState) -> None:
        """The training state as host arrays in the estimator (views on the CPU)."""
        self._set_params_arrays([backend.to_numpy(p) for p in params])
        slots = {k: [backend.to_numpy(a) for a in v] for k, v in state.slots.items()}
        self._optimizer_state = OptimizerState(state.step, slots)

    def _initialize(
        self, X: np.ndarray, n_outputs: int, random_state: np.random.RandomState
    ) -> None:
        """Fresh weights (drawn first, as scikit-learn's, from ``random_state``: the same
        initial weights as its MLP), optimizer state, generator and convergence bookkeeping."""
        sizes = layer_sizes(X.shape[1], self._hidden(), n_outputs)
        self._set_params_arrays(init_params(sizes, self._activation(), X.dtype, random_state))
        self._reset_progress()

    def _reset_progress(self) -> None:
        """Optimizer state, generator and convergence bookkeeping of a new training run."""
        self._rng = _generator(self.random_state)
        self._optimizer_state: OptimizerState | None = None
        self._dropout_seed: int | None = None
        self._schedule_span: tuple[int, int, int] | None = None  # Schedule's start, total, warm-up
        self._learning_rate = float(self.learning_rate_init)
        self.loss_curve_: list[float] = []
        self.history_: list[dict[str, Any]] = []
        self.t_ = 0
        self._reset_stopping()

    def _reset_stopping(self) -> None:
        """The bookkeeping of stopping on a plateau (training loss, or with early_stopping
        validation score, and its best weights)."""
        self._no_improvement_count = 0
        self._best_params: list[np.ndarray] | None = None
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.best_validation_score_: float | None = -np.inf
            self.best_loss_: float | None = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _input_dtype(self) -> Any:
        """What X becomes: ``dtype``, or with None scikit-learn's rule: float32 stays float32,
        anything else becomes float64."""
        return (np.float64, np.float32) if self.dtype is None else self.dtype

    def _stratify(self, y: np.ndarray) -> np.ndarray | None:
        """What the early-stopping split stratifies by (a classifier's classes); None: random."""
        return None

    def _split_validation(
        self, X: np.ndarray, y_idx: np.ndarray, weights: np.ndarray | None,
        random_state: np.random.RandomState,
    ) -> tuple[Any, ...]:  # fmt: skip
        """Held-out rows for early stopping (stratified by class for a classifier), drawn from
        ``random_state`` as scikit-learn's split: (X, X_val, y, y_val, weights, weights_val),
        the weights None when not given."""
        arrays = (X, y_idx) if weights is None else (X, y_idx, weights)
        try:
            split = train_test_split(
                *arrays,
                test_size=self.validation_fraction,
                stratify=self._stratify(y_idx),
                random_state=random_state,  # scikit-learn's draw: its split
            )
        except ValueError as exc:  # too few samples of some class to stratify
            raise ValueError(
                f"validation_fraction={self.validation_fraction} cannot hold out a "
                f"validation sample of {len(y_idx)} rows ({exc}); increase "
                "validation_fraction or the size of the data"
            ) from exc
        if weights is not None and not (split[4].sum() > 0 and split[5].sum() > 0):
            raise ValueError(
                f"validation_fraction={self.validation_fraction} leaves all the sample weight "
                "on one side of the early-stopping split; give more rows a nonzero weight, "
                "change validation_fraction or random_state, or set early_stopping=False"
            )
        if split[1].shape[0] < 2:
            raise ValueError(
                f"The validation set is too small: validation_fraction={self.validation_fraction} "
                f"leaves {split[1].shape[0]} of {len(y_idx)} samples (2 at least); increase "
                "validation_fraction or the size of the data"
            )
        return (*split, None, None) if weights is None else tuple(split)

    def _resume_state(self, backend: Any, opt: Optimizer, params: list[Any]) -> OptimizerState:
        """The saved optimizer state on ``backend`` if it fits ``opt``, else a fresh one."""
        saved = self._optimizer_state
        if saved is None or set(saved.slots) != set(opt.slot_names):
            return init_state(backend, opt, params)
        slots = {
            k: [backend.asarray(a, dtype=p.dtype) for a, p in zip(v, params, strict=True)]
            for k, v in saved.slots.items()
        }
        return OptimizerState(saved.step, slots)

    def _converged(self, stats: EpochStats, backend: Any, params: list[Any]) -> bool:
        """scikit-learn's rule after an epoch: count epochs without improvement by ``tol``
        (the validation score with ``early_stopping``, else training loss), update the
        learning-rate schedule, and say whether to stop."""
        if self.early_stopping:
            regression = self.out_activation_ in REGRESSION_OUTPUTS
            score = stats.val_r2 if regression else stats.val_accuracy
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = [backend.to_numpy(p).copy() for p in params]
        else:
            if stats.loss > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(self.best_loss_, stats.loss)
        sgd = self.solver == "sgd"
        if sgd and self.learning_rate == "invscaling":
            self._learning_rate = self.learning_rate_init / (self.t_ + 1) ** self.power_t
        if self._no_improvement_count <= self.n_iter_no_change:
            return False
        what = "Validation score" if self.early_stopping else "Training loss"
        msg = (
            f"{what} did not improve more than tol={self.tol:f} for "
            f"{self.n_iter_no_change} consecutive epochs."
        )
        if sgd and self.learning_rate == "adaptive" and self._learning_rate > 1e-6:
            self._learning_rate /= 5.0
            self._no_improvement_count = 0
            if self.verbose:
                print(f"{msg} Setting learning rate to {self._learning_rate:f}")
            return False
        if self.verbose:
            tiny = " Learning rate too small." if sgd and self.learning_rate == "adaptive" else ""
            print(f"{msg}{tiny} Stopping.")
        return True

    def use_best_weights(self) -> None:
        """With ``early_stopping``, set the weights to those of the best validation score, as
        fit does when it ends (for a model loaded from a checkpoint taken before that)."""
        check_is_fitted(self, "coefs_")
        if self._best_params is not None:
            self._set_params_arrays([p.copy() for p in self._best_params])

    # ---- inference ----------------------------------------------------------------------
    def _outputs(self, X: Any) -> np.ndarray:
        """The output layer's values for every row of X (Backend.output_probs), on host."""
        check_is_fitted(self, "coefs_")
        _check_2d(X)
        X = validate_data(self, X, dtype=self.coefs_[0].dtype, reset=False, accept_sparse="csr")
        rows = min(X.shape[0], chunk_rows(X))  # predict_proba's chunks
        backend = get_backend(self.backend, step_work=rows * _n_weights(self.coefs_))
        params = [backend.asarray(p) for p in self._params_arrays()]
        with backend.limit_threads(self.n_threads):
            return predict_proba(backend, params, _on_backend(backend, X), self._activation(),
                                 self.out_activation_)  # fmt: skip

    # ---- files --------------------------------------------------------------------------
    def save(
        self,
        path: str | os.PathLike,
        *,
        metadata: dict | None = None,
        training_state: bool = False,
    ) -> None:
        """Write the fitted model to ``path`` (.npz, atomic); ``metadata`` is kept as is.

        ``training_state`` adds what continuing needs (optimizer state, random generator,
        convergence bookkeeping): ``load_model`` then ``fit`` with ``warm_start`` or
        ``partial_fit`` continues exactly as if training had never stopped.
        """
        check_is_fitted(self, "coefs_")
        extra: dict[str, np.ndarray] = {}
        state_meta = None
        if training_state:
            state_meta, extra = self._training_state()
        # the architecture the weights have, whatever set_params changed since the fit
        sizes = [int(self.coefs_[0].shape[0]), *(int(c.shape[1]) for c in self.coefs_)]
        params = {
            k: v
            for k, v in self.get_params().items()
            if k != "random_state" or v is None or isinstance(v, numbers.Integral)
        }
        params["hidden_layer_sizes"] = sizes[1:-1]
        _checked_params(type(self), params, f"cannot save to {path}")
        save_model_file(
            path,
            self._params_arrays(),
            {
                "fastnn_version": __version__,
                "layer_sizes": sizes,
                "activation": self._activation(),
                "dtype": str(self.coefs_[0].dtype),
                "estimator": type(self).__name__,
                **({"classes": self.classes_.tolist()} if hasattr(self, "classes_") else {}),
                "out_activation": self.out_activation_,
                "feature_names": getattr(self, "feature_names_in_", np.array([])).tolist(),
                "estimator_params": params,
                "history": self.history_,
                "user": metadata or {},
                **({"training_state": state_meta} if state_meta else {}),
            },
            extra,
        )

    def _training_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON metadata, arrays) of everything besides the weights that training carries."""
        opt = self._optimizer_state
        slots = {} if opt is None else opt.slots
        arrays = {f"slot_{k}_{i}": a for k, v in slots.items() for i, a in enumerate(v)}
        best = self._best_params or []
        arrays.update({f"best_{i}": a for i, a in enumerate(best)})
        meta = {
            "optimizer_step": 0 if opt is None else opt.step,
            "slots": sorted(slots),
            "velocity": "scikit-learn",  # absent: PyTorch's, which the files had before
            "rng": self._rng.bit_generator.state,
            "learning_rate": self._learning_rate,
            "dropout_seed": self._dropout_seed,
            "schedule_span": self._schedule_span,
            "t": self.t_,
            "no_improvement_count": self._no_improvement_count,
            "best_loss": self.best_loss_,
            "validation_scores": self.validation_scores_,
            "best_validation_score": self.best_validation_score_,
            "best_params": len(best),
        }
        return meta, arrays

    def _restore_training_state(
        self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Any
    ) -> None:
        """Inverse of ``_training_state``; a file that does not fit is a ModelFileError."""
        params = self._params_arrays()
        try:
            slots = {
                k: [arrays[f"slot_{k}_{i}"] for i in range(len(params))] for k in meta["slots"]
            }
            best = [arrays[f"best_{i}"] for i in range(meta["best_params"])]
            rng_state = meta["rng"]
            if rng_state["bit_generator"] not in BIT_GENERATORS:
                raise ValueError(f"unknown bit generator {rng_state['bit_generator']!r}")
            rng = np.random.Generator(getattr(np.random, rng_state["bit_generator"])())
            rng.bit_generator.state = rng_state
            for arrays_like_params in (*slots.values(), best):
                for a, p in zip(arrays_like_params, params, strict=False):
                    if a.shape != p.shape or a.dtype != p.dtype:
                        raise ValueError(f"a state array has shape {a.shape}, expected {p.shape}")
            if "velocity" in slots and meta.get("velocity") != "scikit-learn":
                # PyTorch's velocity (no rate in it) as scikit-learn's, for the next step's rate
                rate = float(meta["learning_rate"])
                slots["velocity"] = [-rate * v for v in slots["velocity"]]
            self._optimizer_state = OptimizerState(int(meta["optimizer_step"]), slots)
            self._rng = rng
            self._learning_rate = float(meta["learning_rate"])
            seed = meta.get("dropout_seed")  # absent in files from before dropout
            self._dropout_seed = None if seed is None else int(seed)
            span = meta.get("schedule_span")  # absent in files from before: from update 0
            self._schedule_span = None if span is None else tuple(int(v) for v in span)
            self.t_ = int(meta["t"])
            self._no_improvement_count = int(meta["no_improvement_count"])
            self.best_loss_ = meta["best_loss"]
            self.validation_scores_ = meta["validation_scores"]
            self.best_validation_score_ = meta["best_validation_score"]
            self._best_params = best or None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ModelFileError(f"{path}: corrupt training state ({exc})") from exc

    # ---- internals ----------------------------------------------------------------------
    def _params_arrays(self) -> list[np.ndarray]:
        return [p for pair in zip(self.coefs_, self.intercepts_, strict=True) for p in pair]

    def _set_params_arrays(self, params: list[np.ndarray]) -> None:
        self.coefs_ = params[0::2]
        self.intercepts_ = params[1::2]
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = self.coefs_[-1].shape[1]

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

    def _batch_rows(self, n: int, *, warn: bool = True) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size == "full":
            return n
        if self.batch_size > n and warn:  # scikit-learn's words, for filters written for it
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                          "to be clipped", UserWarning, stacklevel=3)  # fmt: skip
        return min(int(self.batch_size), n)

    def _optimizer(self, batches_per_epoch: int) -> Optimizer:
        """The update rule, its schedule (over epochs of ``batches_per_epoch`` steps) and
        dropout."""
        regularisation = {
            "alpha": self.alpha,
            "schedule": self._schedule(batches_per_epoch),
            "dropout": float(self.dropout),
            "dropout_seed": self._dropout_seed or 0,
        }
        if self.solver == "adam":
            return Optimizer("adam", self.learning_rate_init, beta1=self.beta_1,
                             beta2=self.beta_2, eps=self.epsilon, **regularisation)  # fmt: skip
        return Optimizer(
            "sgd",
            self.learning_rate_init,
            momentum=self.momentum,
            nesterov=self.nesterovs_momentum and self.momentum > 0,
            **regularisation,
        )

    def _schedule(self, batches_per_epoch: int) -> Schedule | None:
        """lr_schedule, None for a constant rate. Each fit sets its span, in epochs of its
        minibatches: schedule_epochs epochs from the model's first update (a resumed run's),
        else max_iter epochs from this fit's first; partial_fit calls keep the span the first
        of them set (and a file keeps it)."""
        if self.lr_schedule == "constant" and not self.warmup_epochs:
            return None
        done = 0 if self._optimizer_state is None else self._optimizer_state.step
        if self._schedule_span is None:
            start = 0 if self.schedule_epochs else done
            epochs = self.schedule_epochs or self.max_iter
            warmup = math.ceil(self.warmup_epochs * batches_per_epoch)  # at least 1 if any
            self._schedule_span = (start, epochs * batches_per_epoch, warmup)
        start, total, warmup = self._schedule_span
        if self.lr_schedule != "constant" and done >= start + total:
            warnings.warn(
                f"the {self.lr_schedule} learning-rate schedule ended {done - start - total} "
                f"updates ago (it spans {total}); training goes on at its last rate: for "
                "partial_fit, set max_iter or schedule_epochs to the number of epochs",
                UserWarning,
                stacklevel=4,
            )
        return Schedule(self.lr_schedule, total, warmup, start_step=start)

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
        _check_choice("solver", self.solver, (*SOLVERS, "lbfgs"))
        if self.dtype is not None:  # None: scikit-learn's rule (_input_dtype)
            _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("backend", self.backend, backend_names())
        _check_number("learning_rate_init", self.learning_rate_init, low=0, low_open=True)
        _check_number("alpha", self.alpha, low=0)
        _check_number("momentum", self.momentum, low=0, high=1)
        _check_number("beta_1", self.beta_1, low=0, high=1, high_open=True)
        _check_number("beta_2", self.beta_2, low=0, high=1, high_open=True)
        _check_number("epsilon", self.epsilon, low=0, low_open=True)
        _check_choice("learning_rate", self.learning_rate, LEARNING_RATES)
        _check_number("power_t", self.power_t, low=0)
        _check_number("tol", self.tol, low=0)
        _check_number("validation_fraction", self.validation_fraction, low=0, high=1,
                      low_open=True, high_open=True)  # fmt: skip
        if self.n_iter_no_change != np.inf:  # scikit-learn's "never stop on a plateau"
            _check_integer("n_iter_no_change", self.n_iter_no_change,
                           "a positive integer or np.inf")  # fmt: skip
        _check_integer("max_iter", self.max_iter)
        _check_integer("max_fun", self.max_fun)
        for name in ("shuffle", "warm_start", "early_stopping", "nesterovs_momentum", "progress"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is invalid; expected True or False"
                )
        if self.n_threads is not None:
            _check_integer("n_threads", self.n_threads)
        if not (
            self.random_state is None
            or isinstance(self.random_state, numbers.Integral | np.random.RandomState)
        ):
            raise ValueError(
                f"random_state must be None, an integer or a numpy RandomState; got "
                f"{self.random_state!r}"
            )
        if self.batch_size not in ("auto", "full"):
            _check_integer("batch_size", self.batch_size, "'auto', 'full' or a positive integer")
        self._check_regularisation()

    def _check_regularisation(self) -> None:
        """fastnn's dropout and schedule parameters, and the solvers they apply to."""
        _check_number("dropout", self.dropout, low=0, high=1, high_open=True)
        _check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _check_number("warmup_epochs", self.warmup_epochs, low=0)
        if self.schedule_epochs is not None:
            _check_integer("schedule_epochs", self.schedule_epochs, "None or a positive integer")
        epochs = self.schedule_epochs or self.max_iter
        if self.warmup_epochs > epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs!r} is longer than the schedule's {epochs} "
                "epochs (schedule_epochs, else max_iter); shorten the warm-up"
            )
        scheduled = self.lr_schedule != "constant" or self.warmup_epochs > 0
        if self.solver == "lbfgs" and (scheduled or self.dropout):
            raise ValueError(
                "dropout, lr_schedule and warmup_epochs apply to solver='sgd' or 'adam', not "
                "'lbfgs'; set them to their defaults (0, 'constant', 0) or change the solver"
            )
        if scheduled and self.solver == "sgd" and self.learning_rate != "constant":
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} with warmup_epochs={self.warmup_epochs!r} "
                f"replaces learning_rate={self.learning_rate!r}; set learning_rate='constant'"
            )


class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multilayer perceptron classifier: a softmax output (one label per sample) or a logistic
    output per label (a multi-label indicator y), as ``sklearn.neural_network.MLPClassifier``;
    see BaseMLP for the parameters."""

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    @available_if(lambda self: self.solver != "lbfgs")  # as scikit-learn: lbfgs has none
    def partial_fit(
        self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None
    ) -> MLPClassifier:
        """One epoch over (X, y), continuing from the current state; the first call needs
        ``classes``, every label that any later call may contain."""
        if classes is None and not hasattr(self, "coefs_"):
            raise ValueError(
                "classes must be passed on the first call to partial_fit: every label "
                "the model will see, e.g. classes=np.unique(y_all)"
            )
        return self._fit(X, y, incremental=True, classes=classes, sample_weight=sample_weight)

    # ---- targets: BaseMLP's hooks ---------------------------------------------------------
    def _validate_xy(self, X: Any, y: Any, *, reset: bool, dtype: Any) -> tuple[Any, np.ndarray]:
        X, y = validate_data(self, X, y, dtype=dtype, reset=reset, accept_sparse="csr",
                             multi_output=True)  # fmt: skip
        return X, _check_targets(y)

    def _start(self, y: np.ndarray, classes: Any) -> int:
        """classes_ and out_activation_ of a new model; its number of outputs."""
        labels = _labels_of(y) if classes is None else np.unique(classes)
        if not len(labels):
            raise ValueError("classes is empty; pass every label the model will see")
        self.out_activation_ = _output_of(y)
        if self.out_activation_ == "logistic" and not np.array_equal(labels, _labels_of(y)):
            raise ValueError(
                f"classes={labels.tolist()!r} must be the columns of a multi-label y, "
                f"{_labels_of(y).tolist()!r}"
            )
        self.classes_ = labels
        return len(labels)

    def _check_continuation(self, y: np.ndarray, incremental: bool, classes: Any) -> None:
        """y (and partial_fit's classes) must fit the model that training continues."""
        if _output_of(y) != self.out_activation_:
            kinds = {"softmax": "one label per sample", "logistic": "a multi-label indicator y"}
            raise ValueError(
                f"the model was fitted on {kinds[self.out_activation_]}, this y is "
                f"{kinds[_output_of(y)]}; fit with warm_start=False to train on it"
            )
        if not incremental:
            classes_now = _labels_of(y)
            if not np.array_equal(classes_now, self.classes_):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as in the "
                    f"previous call to fit. Previously got {self.classes_}, `y` has "
                    f"{classes_now}; fit with warm_start=False to train on other classes"
                )
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={list(np.unique(classes))!r} differs from the first call to "
                f"partial_fit, which had {self.classes_.tolist()!r}"
            )

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Positions of the labels in ``classes_`` (unknown labels are an error); a
        multi-label y as the 0/1 targets of its outputs."""
        if self.out_activation_ == "logistic":
            if y.shape[1] != len(self.classes_):
                raise ValueError(
                    f"y has {y.shape[1]} labels (columns), the model {len(self.classes_)}"
                )
            return (y > 0).astype(self.coefs_[0].dtype)
        y_idx = np.searchsorted(self.classes_, y)
        unknown = (y_idx >= len(self.classes_)) | (
            self.classes_[np.minimum(y_idx, len(self.classes_) - 1)] != y
        )
        if unknown.any():
            raise ValueError(
                f"y contains labels not in classes_ {self.classes_.tolist()!r}: "
                f"{np.unique(y[unknown]).tolist()!r}; pass every label in classes= on the "
                "first call to partial_fit, or fit from scratch"
            )
        return y_idx.astype(np.int64)

    def _stratify(self, y_idx: np.ndarray) -> np.ndarray | None:
        """scikit-learn's rule: stratify two classes only (its models of one output), by the
        boolean column it trains on, so that the split and its errors (which name the rows'
        strings, e.g. 'True') are scikit-learn's."""
        two_classes = y_idx.ndim == 1 and len(self.classes_) == 2
        return (y_idx == 1)[:, None] if two_classes else None

    # ---- inference ----------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one row per sample, columns in the order of ``classes_``; with
        a multi-label y, each label's probability, kept inside (0, 1) by the dtype's epsilon
        (a float32 sigmoid rounds to exactly 1 from a logit of about 17)."""
        proba = self._outputs(X)
        if self.out_activation_ == "logistic":
            eps = np.finfo(proba.dtype).eps
            np.clip(proba, eps, 1 - eps, out=proba)
        return proba

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of ``predict_proba``."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample; with a multi-label y, the 0/1 indicator of
        the labels whose probability is above one half."""
        proba = self.predict_proba(X)
        if self.out_activation_ == "logistic":
            return (proba > 0.5).astype(np.int64)
        return self.classes_[proba.argmax(axis=1)]


class _PrintLoss:
    """scikit-learn's ``verbose`` output: one line per epoch."""

    def on_epoch_begin(self, epoch: int, n_samples: int) -> None:
        pass

    def on_progress(self, n_rows: int) -> None:
        pass

    def on_epoch_end(self, stats: EpochStats) -> bool:
        print(f"Iteration {stats.epoch}, loss = {stats.loss:.8f}")
        return False


def load_model(path: str | os.PathLike, *, backend: str = "auto") -> BaseMLP:
    """A fitted ``MLPClassifier`` or ``MLPRegressor`` from a file written by ``save`` (never
    unpickles)."""
    from fastnn.regressor import MLPRegressor  # here, not above: it imports this module

    params, meta, extra = load_model_file(path)
    kinds = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}
    kind = meta.get("estimator", "MLPClassifier")  # files before the regressor: classifiers
    outputs = {"MLPClassifier": ("softmax", "logistic"), "MLPRegressor": REGRESSION_OUTPUTS}
    out_activation = meta.get("out_activation", "softmax")
    if kind not in kinds or out_activation not in outputs[kind]:
        raise ModelFileError(
            f"{path}: unknown estimator {kind!r} with output {out_activation!r}; expected "
            "an MLPClassifier or MLPRegressor written by fastnn's save"
        )
    estimator = kinds[kind]
    known = estimator().get_params()
    kwargs = {k: v for k, v in meta.get("estimator_params", {}).items() if k in known}
    kwargs["hidden_layer_sizes"] = tuple(meta["layer_sizes"][1:-1])  # what the weights have
    kwargs["activation"] = meta.get("activation", kwargs.get("activation", "relu"))
    kwargs.pop("backend", None)  # the caller's, checked when it is used
    model = _checked_params(estimator, kwargs, f"{path}: metadata")
    model.backend = backend
    model._reset_progress()
    model._set_params_arrays(params)
    if "classes" in meta:
        model.classes_ = np.asarray(meta["classes"])
    model.out_activation_ = out_activation
    model.n_features_in_ = meta["layer_sizes"][0]
    if meta.get("feature_names"):
        model.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
    model.history_ = meta.get("history", [])
    model.loss_curve_ = [h["loss"] for h in model.history_]
    if model.loss_curve_:
        model.loss_ = model.loss_curve_[-1]
    model.n_iter_ = len(model.history_)
    model.t_ = sum(int(h.get("samples", 0)) for h in model.history_)
    if model.loss_curve_ and not model.early_stopping:
        model.best_loss_ = min(model.loss_curve_)
    model.metadata_ = meta.get("user", {})
    if "training_state" in meta:
        model._restore_training_state(meta["training_state"], extra, path)
    return model


def _checked_params(cls: type[BaseMLP], params: dict[str, Any], where: str) -> BaseMLP:
    """An unfitted ``cls(**params)`` whose parameters pass ``_check_params``; otherwise a
    one-line ModelFileError that starts with ``where``."""
    try:
        model = cls(**params)
        model._check_params()
    except (ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{where}: estimator parameter {reason}") from exc
    return model


def _n_weights(coefs: list[np.ndarray]) -> int:
    """A network's weights: the multiply-adds of one row's forward pass."""
    return sum(W.size for W in coefs)


def _generator(random_state: Any) -> np.random.Generator:
    """A numpy Generator from scikit-learn style ``random_state`` (None, int or RandomState,
    as _check_params checked)."""
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    return np.random.default_rng(random_state)


def _check_weights(sample_weight: Any, n: int) -> np.ndarray:
    """sample_weight as n finite, non-negative float64 weights (a number: the same for every
    row), not all zero."""
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(
            f"sample_weight has shape {w.shape}; it needs one weight per sample: ({n},)"
        )
    if not np.isfinite(w).all() or (w < 0).any() or not w.any():
        raise ValueError(
            "sample_weight must be finite, non-negative and not all zero; got values in "
            f"[{w.min()}, {w.max()}]"
        )
    return w


def _check_targets(y: np.ndarray) -> np.ndarray:
    """y of one label per sample (1-D, or one column, raveled with scikit-learn's warning) or
    a multi-label indicator matrix; anything else is an error, as in scikit-learn."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    if y.ndim == 2 and type_of_target(y) != "multilabel-indicator":
        raise ValueError(
            f"y should be a 1d array or a multi-label indicator matrix (0/1), got an array of "
            f"shape {y.shape} instead"
        )
    check_classification_targets(y)
    return y


def _output_of(y: np.ndarray) -> str:
    """The output layer for targets y: "logistic" for a multi-label indicator, else "softmax"."""
    return "logistic" if y.ndim == 2 else "softmax"


def _labels_of(y: np.ndarray) -> np.ndarray:
    """The classes of y: its distinct labels, or a multi-label y's columns 0, 1, ..."""
    return np.arange(y.shape[1]) if y.ndim == 2 else np.unique(y)


def _on_backend(backend: Any, X: Any) -> Any:
    """X where the backend computes; a scipy sparse X stays on the host, densified a
    minibatch at a time (``dense_rows``)."""
    return X if scipy.sparse.issparse(X) else backend.asarray(X)


def _check_2d(X: Any) -> None:
    """X must be a table of samples; scikit-learn's own message spans several lines."""
    ndim = getattr(X, "ndim", None)
    if ndim is None and isinstance(X, list | tuple):
        try:
            ndim = np.ndim(X)
        except ValueError:  # ragged nested lists: validate_data explains
            return
    if ndim is not None and ndim != 2:
        shape = getattr(X, "shape", None) or np.shape(X)
        raise ValueError(
            f"X must be 2-D, (n_samples, n_features); got a {ndim}-D array of shape {shape}. "
            "Reshape your data: X.reshape(-1, 1) for one feature, X.reshape(1, -1) for one sample, "
            "X.reshape(len(X), -1) for images"
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
        lo, hi = ("(" if low_open else "["), (")" if high_open or high == np.inf else "]")
        raise ValueError(
            f"{name}={value!r} is out of range; expected a number in {lo}{low}, {high}{hi}"
        )


def _check_integer(name: str, value: Any, accepted: str = "a positive integer") -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid; expected {accepted}")
