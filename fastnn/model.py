"""Network shape, seeded parameter initialisation, and batched inference through a backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse

from fastnn.backends.base import REGRESSION_OUTPUTS, Backend, dense_rows

INFERENCE_CHUNK = 8192  # rows per forward pass at inference: bounds memory on any dataset
SPARSE_CHUNK_BYTES = 1 << 26  # at most this much of a sparse X densified at once


def chunk_rows(X: Any) -> int:
    """Rows per forward pass over X: INFERENCE_CHUNK, fewer where a sparse X's rows are so
    wide (text features) that densifying that many would take more than SPARSE_CHUNK_BYTES."""
    if not scipy.sparse.issparse(X):
        return INFERENCE_CHUNK
    return max(1, min(INFERENCE_CHUNK, SPARSE_CHUNK_BYTES // (X.shape[1] * X.dtype.itemsize)))


def layer_sizes(n_features: int, hidden: Sequence[int], n_classes: int) -> tuple[int, ...]:
    """(inputs, hidden..., outputs); two classes still get two softmax outputs."""
    return (int(n_features), *(int(h) for h in hidden), int(n_classes))


def init_params(
    sizes: Sequence[int], activation: str, dtype: Any,
    rng: np.random.Generator | np.random.RandomState,
) -> list[np.ndarray]:  # fmt: skip
    """[W0, b0, W1, b1, ...] as scikit-learn initialises them: weights and biases uniform in
    +-sqrt(6 / (fan_in + fan_out)) (Glorot), +-sqrt(2 / (fan_in + fan_out)) for sigmoid.

    Drawn in float64 then cast, so float32 and float64 networks start from the same values;
    from a RandomState seeded as scikit-learn's, they are its MLP's initial values.
    """
    factor = 2.0 if activation == "sigmoid" else 6.0
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        bound = np.sqrt(factor / (fan_in + fan_out))
        W = rng.uniform(-bound, bound, size=(fan_in, fan_out))
        b = rng.uniform(-bound, bound, size=fan_out)
        params += [W.astype(dtype), b.astype(dtype)]
    return params


def predict_proba(
    backend: Backend, params: list[Any], X: Any, activation: str, output: str = "softmax"
) -> np.ndarray:
    """Class (or, with a logistic output, label) probabilities for every row of ``X``, in
    chunks, returned on host."""
    chunks, step = [], chunk_rows(X)
    for s in range(0, X.shape[0], step):
        x = dense_rows(backend, X, slice(s, s + step))
        logits = backend.forward(params, x, activation)
        chunks.append(backend.to_numpy(backend.output_probs(logits, output)))
    return np.concatenate(chunks) if chunks else np.empty((0, params[-1].shape[0]))


def evaluate(
    backend: Backend, params: list[Any], X: Any, y_idx: Any, activation: str,
    output: str = "softmax", weights: Any = None,
) -> tuple[float, float]:  # fmt: skip
    """(mean loss, score) of the network on (X, y_idx), in chunks: the score is the accuracy,
    or for a regression output the R^2 averaged over the outputs (scikit-learn's ``score``);
    both weighted by the rows' ``weights`` when given (scikit-learn's ``sample_weight``)."""
    regression = output in REGRESSION_OUTPUTS
    loss_sum = correct = total = 0.0
    residual = 0.0  # regression: per output, the (weighted) sum of squared errors
    step = chunk_rows(X)
    for s in range(0, X.shape[0], step):
        rows = slice(s, s + step)
        logits = backend.forward(params, dense_rows(backend, X, rows), activation)
        y_chunk = y_idx[rows]
        w = None if weights is None else weights[rows]
        share = y_chunk.shape[0] if w is None else float(w.sum())
        if share == 0:
            continue
        loss, _ = backend.output_loss(logits, y_chunk, output, w)
        loss_sum += float(loss) * share
        total += share
        if regression:
            err = (backend.output_probs(logits, output) - y_chunk).astype(np.float64) ** 2
            residual = residual + (err.sum(axis=0) if w is None else w.astype(np.float64) @ err)
        else:
            hits = backend.row_hits(logits, y_chunk, output)
            correct += float(hits.sum() if w is None else (w * hits).sum())
    total = total or 1.0
    if regression:
        return loss_sum / total, r2(backend, residual, y_idx, weights)
    return loss_sum / total, correct / total


def r2(backend: Backend, residual: Any, y: Any, weights: Any = None) -> float:
    """scikit-learn's ``r2_score`` (uniform average over the outputs, ``force_finite``) from
    each output's sum of squared errors: an output whose targets are constant scores 1 when
    predicted exactly and 0 otherwise; NaN when a prediction is not finite."""
    xp = backend.xp
    y = y.astype(np.float64)
    if weights is None:
        spread = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    else:
        weights = weights.astype(np.float64)
        mean = (weights @ y) / weights.sum()
        spread = weights @ ((y - mean) ** 2)
    residual = backend.to_numpy(xp.asarray(residual)).astype(np.float64)
    spread = backend.to_numpy(spread).astype(np.float64)
    if not np.isfinite(residual).all():
        return float("nan")
    constant = spread == 0
    scores = np.where(constant, (residual == 0).astype(float),
                      1 - residual / np.where(constant, 1, spread))  # fmt: skip
    return float(scores.mean())
