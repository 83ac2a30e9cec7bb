"""The training loop: batching, per-epoch shuffling, epochs, callbacks, progress."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np

from fastnn.backends.base import REGRESSION_OUTPUTS, Backend
from fastnn.errors import TrainingDiverged
from fastnn.model import evaluate
from fastnn.optim import Optimizer, OptimizerState

# scikit-learn's words for a divergence, so that code matching its message matches fastnn's
NONFINITE = (
    "Solver produced non-finite parameter weights. The input data may contain large values and "
    "need to be preprocessed."
)
PROGRESS_ROWS = 8192  # rows per backend call: progress updates without per-step overhead


@dataclass
class EpochStats:
    """What one epoch did: mean training loss and accuracy (None for a regression) over its
    samples, wall time; on held-out rows, when training has some, the loss and the accuracy
    or a regression's R^2."""

    epoch: int
    loss: float
    accuracy: float | None
    seconds: float
    samples: int
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_r2: float | None = None

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, float]:
        # not dataclasses.asdict: its recursive deep copy took 5% of a small-data fit
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**out, "samples_per_second": self.samples_per_second}


class Callback(Protocol):
    def on_epoch_begin(self, epoch: int, n_samples: int) -> None: ...
    def on_progress(self, n_rows: int) -> None: ...
    def on_epoch_end(self, stats: EpochStats) -> bool:
        """Return True to stop training after this epoch."""
        ...


def run_epoch(
    backend: Backend,
    params: list[Any],
    state: OptimizerState,
    X: Any,
    y: Any,
    *,
    activation: str,
    opt: Optimizer,
    batch_size: int,
    order: np.ndarray | None,
    callbacks: Sequence[Callback] = (),
    output: str = "softmax",
    weights: Any = None,
) -> tuple[float, float]:
    """One pass over (X, y) in minibatches of ``batch_size`` rows (the last may be smaller).

    ``order`` is a permutation of the rows, or None to keep them in place. With callbacks the
    backend trains a chunk of about PROGRESS_ROWS rows per call (whole minibatches), so
    progress is reported while the backend may fuse many steps; without, the whole epoch is
    one call (each call of the fused numba kernel pays its setup: padded copies of the
    parameters and its buffers). Returns the mean loss and the accuracy, read back once.
    """
    n = X.shape[0]
    index = None if order is None else backend.asarray(order)
    chunk = batch_size * max(1, PROGRESS_ROWS // batch_size) if callbacks else n
    loss_sum = correct = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        chunk_loss, chunk_correct = backend.train_batches(
            params, state, X, y, index, start, stop, batch_size, activation, opt, output, weights
        )
        loss_sum = loss_sum + chunk_loss
        correct = correct + chunk_correct
        for cb in callbacks:
            cb.on_progress(stop - start)
    backend.synchronize()
    return float(loss_sum) / n, float(correct) / n


def train(
    backend: Backend,
    params: list[Any],
    state: OptimizerState,
    X: Any,
    y: Any,
    *,
    activation: str,
    opt: Optimizer,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator,
    first_epoch: int = 1,
    callbacks: Sequence[Callback] = (),
    validation: tuple[Any, ...] | None = None,
    output: str = "softmax",
    weights: Any = None,
) -> list[EpochStats]:
    """Train ``params`` in place for up to ``epochs`` epochs; a callback may stop it early.

    Rows are reshuffled every epoch when ``shuffle`` (except for one full batch, whose
    gradient does not depend on the order). ``validation`` (X, y) or (X, y, row weights) is
    scored after each epoch; ``weights`` weights the training rows' losses.
    """
    n = X.shape[0]
    history = []
    for epoch in range(first_epoch, first_epoch + epochs):
        for cb in callbacks:
            cb.on_epoch_begin(epoch, n)
        order = rng.permutation(n) if shuffle and batch_size < n else None
        snapshot = _copy_state(params, state)  # to find and undo a divergence
        t0 = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
            loss, accuracy = run_epoch(
                backend,
                params,
                state,
                X,
                y,
                activation=activation,
                opt=opt,
                batch_size=batch_size,
                order=order,
                callbacks=callbacks,
                output=output,
                weights=weights,
            )
        if not (math.isfinite(loss) and all_finite(backend, params)):
            with np.errstate(over="ignore", invalid="ignore"):
                where = _first_bad_batch(backend, params, state, snapshot, X, y, activation, opt,
                                         batch_size, order, output, weights)  # fmt: skip
            n_batches = -(-n // batch_size)
            raise TrainingDiverged(
                f"training diverged in epoch {epoch}, batch {where} of {n_batches}: {NONFINITE} "
                f"The parameters are left at their last finite values; lower the learning rate "
                f"(it is {opt.lr:g}) or scale the data"
            )
        regression = output in REGRESSION_OUTPUTS
        seconds = time.perf_counter() - t0
        stats = EpochStats(epoch, loss, None if regression else accuracy, seconds, n)
        if validation is not None:
            with backend.scoring_between_epochs(params):
                stats.val_loss, score = evaluate(
                    backend, params, *validation[:2], activation, output, *validation[2:]
                )
            if regression:
                stats.val_r2 = score
            else:
                stats.val_accuracy = score
        history.append(stats)
        stop = [cb.on_epoch_end(stats) for cb in callbacks]
        if any(stop):
            break
    return history


EXPLODED_FACTOR = 10.0


def check_exploding(losses: Sequence[float], n_classes: int, lr: float) -> None:
    """Raise TrainingDiverged when the last epoch's finite cross-entropy loss has exploded, so
    that a run whose loss blew up is not saved as a model.

    Two bounds, both in units of ln(K), the loss of guessing all K classes uniformly (what a
    fresh network scores, and the worst a network that learnt anything does):
    - above EXPLODED_FACTOR * ln(K): on average the true class gets a probability under
      K**-10 (e.g. 1e-10 for ten classes): no training run that learns is ever there, even in
      its first epoch;
    - above EXPLODED_FACTOR times the first epoch's loss *and* above ln(K): worse than
      guessing and ten times worse than where it started. Being worse than guessing keeps a
      run whose first loss was tiny (easy data) from being stopped by mere noise.
    """
    if not losses:
        return
    loss = losses[-1]
    uniform = math.log(max(n_classes, 2))
    first = losses[0]
    epoch = len(losses)
    if loss > EXPLODED_FACTOR * uniform:
        bound = EXPLODED_FACTOR * uniform
        why = f"{loss:.4g} is above {EXPLODED_FACTOR:g} x ln({n_classes}) = {bound:.3g}"
    elif epoch > 1 and loss > EXPLODED_FACTOR * first and loss > uniform:
        why = f"{loss:.4g} is more than {EXPLODED_FACTOR:g} times the first epoch's {first:.4g}"
    else:
        return
    raise TrainingDiverged(
        f"training diverged in epoch {epoch}: the loss exploded ({why}) though it stayed "
        f"finite; lower the learning rate (it is {lr:g}) or scale the data"
    )


def all_finite(backend: Backend, arrays: Sequence[Any]) -> bool:
    """Whether every value of every array is finite (one reduction per array)."""
    return all(bool(backend.xp.isfinite(a).all()) for a in arrays)


def _copy_state(params: list[Any], state: OptimizerState) -> tuple[list[Any], OptimizerState]:
    return [p.copy() for p in params], state.copy()


def _restore_state(
    params: list[Any], state: OptimizerState, saved: tuple[list[Any], OptimizerState]
) -> None:
    for p, q in zip(params, saved[0], strict=True):
        p[...] = q
    for k, v in saved[1].slots.items():
        for a, b in zip(state.slots[k], v, strict=True):
            a[...] = b
    state.step = saved[1].step


def _first_bad_batch(
    backend: Backend,
    params: list[Any],
    state: OptimizerState,
    snapshot: tuple[list[Any], OptimizerState],
    X: Any,
    y: Any,
    activation: str,
    opt: Optimizer,
    batch_size: int,
    order: np.ndarray | None,
    output: str = "softmax",
    weights: Any = None,
) -> int:
    """Replay the epoch from ``snapshot`` one batch at a time, stop before the first batch
    whose loss or update is not finite, and return its number (from 1); ``params`` and
    ``state`` are left as they were before that batch."""
    _restore_state(params, state, snapshot)
    index = None if order is None else backend.asarray(order)
    n = X.shape[0]
    for number, start in enumerate(range(0, n, batch_size), 1):
        before = _copy_state(params, state)
        stop = min(start + batch_size, n)
        loss, _ = backend.train_batches(
            params, state, X, y, index, start, stop, batch_size, activation, opt, output, weights
        )
        if not (math.isfinite(float(loss)) and all_finite(backend, params)):
            _restore_state(params, state, before)
            return number
    return -(-n // batch_size)  # not reached: the replay repeats the epoch exactly


class ProgressBar:
    """A tqdm bar per epoch on stderr: samples done, samples/s, then loss and accuracy."""

    def __init__(self, last_epoch: int) -> None:
        self.last_epoch = last_epoch
        self.bar: Any = None

    def on_epoch_begin(self, epoch: int, n_samples: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=n_samples,
            desc=f"epoch {epoch}/{self.last_epoch}",
            unit="sample",
            unit_scale=True,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def on_progress(self, n_rows: int) -> None:
        self.bar.update(n_rows)

    def on_epoch_end(self, stats: EpochStats) -> bool:
        score = {} if stats.accuracy is None else {"acc": f"{stats.accuracy:.4f}"}
        self.bar.set_postfix(loss=f"{stats.loss:.4f}", **score)
        self.bar.close()
        return False
