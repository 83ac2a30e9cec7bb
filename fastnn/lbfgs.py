"""solver="lbfgs": scipy's L-BFGS-B over the backend's loss and gradient of the whole data.

The objective is scikit-learn's: the mean cross-entropy plus ``alpha / 2`` times the sum of
the squared weights (not biases) over the number of samples. scipy works in float64 on one
flat vector; each evaluation unpacks it into the network's dtype on the backend, runs one
forward and backward pass over every row (``Backend.loss_and_grads``), and packs the gradient
back. Nothing here is an L-BFGS of fastnn's own.

BLAS threads: scipy's wheels bring an OpenBLAS of their own beside numpy's, and after each
product the idle workers of both spin, so L-BFGS-B's own vector work and the products took
turns with four busy threads on two cores (digits, hidden 100: 0.53-0.73 s a fit, against
0.14-0.21 s with scipy's OpenBLAS on one thread and 0.066-0.082 s with both on one, on a 2-core
Zen 4). scipy's BLAS runs on one thread throughout (its vectors are short), numpy's too when an
evaluation is small (ms per iteration, one thread against two: digits 1.70 / 2.35; 200 x 784
rows 6.65 / 6.42; 2000 x 784, 16.2 / 11.6; 5000 x 784, 28.2 / 19.1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.optimize
from threadpoolctl import ThreadpoolController

from fastnn.backends.base import Backend, dense_rows
from fastnn.model import chunk_rows

SMALL_EVALUATION = 1e8  # floating-point operations of one loss and gradient, at most


@dataclass(frozen=True)
class LbfgsResult:
    """What scipy reports: iterations, loss evaluations, the final objective, whether it
    converged and scipy's message."""

    n_iter: int
    n_evaluations: int
    loss: float
    converged: bool
    message: str


class Objective:
    """scikit-learn's L-BFGS objective of a network shaped like ``params`` on (X, y_idx), as a
    function of one flat float64 vector of the parameters in the order of ``params``; with
    row ``weights``, their weighted mean, and the penalty over their sum (scikit-learn's
    ``sample_weight``)."""

    def __init__(self, backend: Backend, params: list[Any], X: Any, y_idx: Any, activation: str,
                 alpha: float, output: str = "softmax", weights: Any = None) -> None:  # fmt: skip
        self.backend, self.X, self.y_idx, self.weights = backend, X, y_idx, weights
        self.activation, self.alpha, self.output = activation, alpha, output
        self.shapes = [tuple(p.shape) for p in params]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.ends = np.cumsum(sizes)
        self.starts = self.ends - sizes
        self.dtype = params[0].dtype

    def pack(self, params: list[Any]) -> np.ndarray:
        return np.concatenate([self.backend.to_numpy(p).ravel() for p in params]).astype(np.float64)

    def unpack(self, theta: np.ndarray, dtype: Any = None) -> list[Any]:
        return [
            self.backend.asarray(theta[a:b].reshape(s), dtype=dtype or self.dtype)
            for a, b, s in zip(self.starts, self.ends, self.shapes, strict=True)
        ]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(objective, its gradient) at ``theta``, in the network's dtype; in float64 where
        that overflows (a trial step whose exp or square passes float32's range: scipy's line
        search took the infinite loss as converged, 2 iterations into a Poisson fit)."""
        loss, gradient = self._evaluate(theta, self.dtype)
        if not np.isfinite(loss) and self.dtype != np.float64:
            loss, gradient = self._evaluate(theta, np.dtype(np.float64))
        return loss, gradient

    def _evaluate(self, theta: np.ndarray, dtype: np.dtype) -> tuple[float, np.ndarray]:
        """The objective and its gradient computed in ``dtype``, the data in chunks
        (model.chunk_rows: they bound the activations' memory, and densify a sparse X a chunk
        at a time)."""
        n, step = self.X.shape[0], chunk_rows(self.X)
        total = n if self.weights is None else float(self.weights.sum())
        params = self.unpack(theta, dtype)
        loss, gradient = 0.0, np.zeros_like(theta)
        for s in range(0, n, step):
            rows = slice(s, s + step)
            x, y = dense_rows(self.backend, self.X, rows), self.y_idx[rows]
            w = None if self.weights is None else self.weights[rows]
            if dtype != self.dtype:  # labels stay integers
                as_dtype = self.backend.asarray
                x, w = as_dtype(x, dtype), None if w is None else as_dtype(w, dtype)
                y = as_dtype(y, dtype) if y.dtype.kind == "f" else y
            # the chunk's means, weighted into the whole data's
            share = (y.shape[0] if w is None else float(w.sum())) / total
            if share == 0:
                continue
            chunk_loss, _, grads = self.backend.loss_and_grads(params, x, y, self.activation,
                                                               self.output, w)  # fmt: skip
            loss += float(chunk_loss) * share
            for a, b, g in zip(self.starts, self.ends, grads, strict=True):
                gradient[a:b] += self.backend.to_numpy(g).ravel() * share
        penalty = 0.0
        for i, (a, b) in enumerate(zip(self.starts, self.ends, strict=True)):
            if i % 2 == 0:  # weights (not biases): the L2 penalty
                gradient[a:b] += (self.alpha / total) * theta[a:b]
                penalty += float(theta[a:b] @ theta[a:b])
        return float(loss) + 0.5 * self.alpha * penalty / total, gradient


def fit_lbfgs(
    backend: Backend,
    params: list[Any],
    X: Any,
    y_idx: Any,
    *,
    activation: str,
    alpha: float,
    max_iter: int,
    max_fun: int,
    tol: float,
    output: str = "softmax",
    weights: Any = None,
) -> LbfgsResult:
    """Minimise the Objective over ``params`` (updated in place) from their current values,
    for at most ``max_iter`` iterations and ``max_fun`` loss evaluations, stopping when the
    largest gradient component falls below ``tol`` (scipy's ``gtol``)."""
    objective = Objective(backend, params, X, y_idx, activation, alpha, output, weights)
    flops = 6.0 * X.shape[0] * sum(int(np.prod(s)) for s in objective.shapes[::2])
    # a trial step may overflow float32 (Objective evaluates it again in float64)
    with _blas_threads(flops), np.errstate(over="ignore", invalid="ignore"):
        result = scipy.optimize.minimize(
            objective,
            objective.pack(params),
            method="L-BFGS-B",
            jac=True,
            options={"maxiter": max_iter, "maxfun": max_fun, "gtol": tol},
        )
    for p, q in zip(params, objective.unpack(result.x), strict=True):
        p[...] = q
    return LbfgsResult(
        n_iter=min(int(result.nit), max_iter),
        n_evaluations=int(result.nfev),
        loss=float(result.fun),
        converged=bool(result.success),
        message=str(result.message),
    )


@contextlib.contextmanager
def _blas_threads(flops: float) -> Iterator[None]:
    """scipy's own BLAS on one thread, and every BLAS when an evaluation takes fewer than
    SMALL_EVALUATION operations (see the module's docstring)."""
    controller = ThreadpoolController()
    if flops < SMALL_EVALUATION:
        with controller.limit(limits=1, user_api="blas"):
            yield
        return
    own = [lib.filepath for lib in controller.lib_controllers if _scipys(lib.filepath)]
    if not own:  # scipy shares numpy's BLAS: one pool, nothing to separate
        yield
        return
    with controller.select(filepath=own).limit(limits=1):
        yield


def _scipys(path: str) -> bool:
    """Whether a shared library is scipy's own (in scipy's package or its wheel's scipy.libs)."""
    where = Path(path).resolve()
    return where.parent.name == "scipy.libs" or where.is_relative_to(Path(scipy.__file__).parent)
