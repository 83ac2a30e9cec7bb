"""``MLPRegressor``: scikit-learn's MLP regressor over fastnn's model, trainer and backends."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import column_or_1d, validate_data

from fastnn.estimator import BaseMLP, _check_choice

LOSSES = {"squared_error": "identity", "poisson": "exp"}  # loss: the output layer it needs


class MLPRegressor(RegressorMixin, BaseMLP):
    """Multilayer perceptron regressor, as ``sklearn.neural_network.MLPRegressor``: an identity
    output trained on half the squared error, or with ``loss="poisson"`` an exponential output
    on half the Poisson deviance (for counts and other non-negative y); one output per column
    of y. ``score`` is R^2; see BaseMLP for the other parameters."""

    def __init__(
        self,
        loss: str = "squared_error",  # first, as in scikit-learn 1.9's signature
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
        self.loss = loss
        shared = {k: v for k, v in locals().items() if k not in ("self", "loss", "__class__")}
        super().__init__(**shared)  # every other parameter, as given

    @available_if(lambda self: self.solver != "lbfgs")  # as scikit-learn: lbfgs has none
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over (X, y), continuing from the current state."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X: Any) -> np.ndarray:
        """The predicted values: one per sample, or a column per output when y had several."""
        values = self._outputs(X)
        return values.ravel() if values.shape[1] == 1 else values

    def _check_params(self) -> None:
        _check_choice("loss", self.loss, tuple(LOSSES))
        super()._check_params()

    # ---- targets: BaseMLP's hooks ---------------------------------------------------------
    def _validate_xy(self, X: Any, y: Any, *, reset: bool, dtype: Any) -> tuple[Any, np.ndarray]:
        """X, and y as a float matrix of one column per output (a 1-D y is one output; a
        single column is raveled with scikit-learn's warning)."""
        X, y = validate_data(self, X, y, dtype=dtype, reset=reset, accept_sparse="csr",
                             multi_output=True, y_numeric=True)  # fmt: skip
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError(
                f"loss='poisson' needs non-negative y (counts, rates); y has values down to "
                f"{y.min()}; use loss='squared_error' for y of any sign"
            )
        return X, y.reshape(len(y), -1)

    def _start(self, y: np.ndarray, classes: Any) -> int:
        """out_activation_ of a new model; its number of outputs."""
        self.out_activation_ = LOSSES[self.loss]
        return y.shape[1]

    def _check_continuation(self, y: np.ndarray, incremental: bool, classes: Any) -> None:
        """The loss must be the model's (y's outputs: _targets)."""
        if LOSSES[self.loss] != self.out_activation_:
            raise ValueError(
                f"loss={self.loss!r} differs from the loss the model was fitted with; fit with "
                "warm_start=False to change it"
            )

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """y in the model's dtype, one column per output (checked: partial_fit's and
        validation_data's y too)."""
        if y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y.shape[1]} output(s), the model {self.n_outputs_}; give y one column "
                "per output the model was fitted on, or fit with warm_start=False"
            )
        dtype = self.coefs_[0].dtype
        with np.errstate(over="ignore"):
            targets = np.ascontiguousarray(y, dtype=dtype)
        if not np.isfinite(targets).all():
            raise ValueError(
                f"y has values beyond the range of {dtype} (up to {np.abs(y).max():.3g}); "
                "scale y, or use dtype='float64'"
            )
        return targets
