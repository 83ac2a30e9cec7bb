"""Pictures of what a network learned: training curves, confusion matrix, confident mistakes,
first-layer weights, and the activation functions.

Each function returns a matplotlib ``Figure`` (shown inline in notebooks); ``save_all`` writes
them as PNGs. Figures are built without pyplot, so no display is needed and no global state is
touched. matplotlib is the ``plot`` extra.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastnn.errors import FastnnError

DPI = 100
MAX_MISTAKES = 24
MAX_UNITS = 64
MAX_LABELLED_CLASSES = 40  # above: no counts in cells, no tick labels
MAX_CONFUSION_INCHES = 16.0  # a bounded figure, whatever the class count
FIGURES = ("curves", "confusion", "mistakes", "weights", "activations")


def require_matplotlib() -> None:
    """Fail early, in one line, when the ``plot`` extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise FastnnError(
            "plotting needs matplotlib, which is not installed: pip install 'fastnn[plot]'"
        ) from None


def _figure(width: float, height: float) -> Any:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def image_shape(n_features: int) -> tuple[int, int] | None:
    """(side, side) when the inputs are square images (784 -> 28x28, 64 -> 8x8), else None."""
    side = math.isqrt(n_features)
    return (side, side) if side * side == n_features else None


def curves(model: Any) -> Any:
    """Loss and accuracy per epoch, training and (when recorded) validation, from history_."""
    history = model.history_
    if not history:
        raise FastnnError("the model has no training history to plot (it was never fitted)")
    epochs = [h["epoch"] for h in history]
    fig = _figure(10, 4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, title in (
        (loss_ax, "loss", "cross-entropy loss"),
        (acc_ax, "accuracy", "accuracy"),
    ):
        ax.plot(epochs, [h[key] for h in history], marker=".", label="training")
        val = [h.get(f"val_{key}") for h in history]
        if any(v is not None for v in val):
            ax.plot(epochs, [np.nan if v is None else v for v in val], marker=".",
                    label="validation")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    if all(h.get("val_loss") is None for h in history):
        fig.suptitle("no validation data recorded (train with --validation-fraction)", fontsize=9)
    return fig


def confusion_labels(model: Any, y: Any) -> np.ndarray:
    """The model's classes and any label of ``y`` outside them, sorted."""
    return np.union1d(model.classes_, np.asarray(y))


def confusion_counts(model: Any, X: Any, y: Any) -> np.ndarray:
    """counts[i, j]: samples of class ``labels[i]`` predicted as ``labels[j]``, where labels are
    ``confusion_labels(model, y)`` (the model's classes, and labels of y it never saw)."""
    import warnings

    from sklearn.metrics import confusion_matrix

    with warnings.catch_warnings():  # "a single label was found": labels= is given, so noise
        warnings.simplefilter("ignore", UserWarning)
        return confusion_matrix(y, model.predict(X), labels=confusion_labels(model, y))


def confusion(model: Any, X: Any, y: Any) -> Any:
    """The confusion matrix on (X, y): counts written in the cells, colour by row share. Above
    ``MAX_LABELLED_CLASSES`` classes the cells and ticks are left unwritten and the figure's
    size stays bounded."""
    counts = confusion_counts(model, X, y)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = [str(c) for c in confusion_labels(model, y)]
    labelled = len(names) <= MAX_LABELLED_CLASSES
    size = min(max(4.0, 0.5 * len(names) + 2), MAX_CONFUSION_INCHES)
    fig = _figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of the true class")
    if labelled:
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 12 else 0)
        ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted" if labelled else f"predicted (of {len(names)} classes)")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{counts.sum()} samples, accuracy {accuracy:.4f}")
    if labelled:
        for i, j in np.ndindex(counts.shape):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    return fig


def most_confident_mistakes(model: Any, X: Any, y: Any, n: int = MAX_MISTAKES) -> np.ndarray:
    """Row indices of the wrong predictions, most confident first."""
    proba = model.predict_proba(X)
    predicted = model.classes_[proba.argmax(axis=1)]
    wrong = np.flatnonzero(predicted != np.asarray(y))
    return wrong[np.argsort(-proba[wrong].max(axis=1), kind="stable")][:n]


def mistakes(model: Any, X: Any, y: Any, n: int = MAX_MISTAKES) -> Any:
    """A grid of the most confidently misclassified images: true label, prediction, probability."""
    X, y = np.asarray(X), np.asarray(y)
    rows = most_confident_mistakes(model, X, y, n)
    shape = image_shape(X.shape[1])
    cols = 8
    fig = _figure(12, 1.7 * max(1, -(-len(rows) // cols)) + 0.4)
    if len(rows) == 0:
        fig.suptitle("no mistakes on these samples")
        return fig
    proba = model.predict_proba(X[rows])
    axes = fig.subplots(-(-len(rows) // cols), cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r, p in zip(axes.flat, rows, proba, strict=False):
        image = X[r].reshape(shape) if shape else X[r][None, :]
        ax.imshow(image, cmap="gray_r", aspect="equal" if shape else "auto")
        ax.set_title(f"true {y[r]}\npred {model.classes_[p.argmax()]} ({p.max():.2f})", fontsize=8)
    fig.suptitle(f"{len(rows)} most confident mistakes")
    return fig


def weights(model: Any, n: int = MAX_UNITS) -> Any:
    """The first layer's incoming weights of each hidden unit (up to ``n``) drawn as images."""
    W = np.asarray(model.coefs_[0])
    shape = image_shape(W.shape[0])
    units = min(n, W.shape[1])
    cols = min(8, units)
    grid = -(-units // cols)
    fig = _figure(1.3 * cols + 0.6, 1.3 * grid + 0.5)
    axes = fig.subplots(grid, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in zip(range(units), axes.flat, strict=False):
        w = W[:, k]
        limit = float(np.abs(w).max()) or 1.0  # symmetric colours: red positive, blue negative
        ax.imshow(w.reshape(shape) if shape else w[None, :], cmap="RdBu_r", vmin=-limit,
                  vmax=limit, aspect="equal" if shape else "auto")  # fmt: skip
        ax.set_title(f"unit {k}", fontsize=7)
    fig.suptitle(f"first-layer weights, {units} of {W.shape[1]} hidden units")
    return fig


def activations() -> Any:
    """relu, tanh and sigmoid with their derivatives: the notebooks' figure."""
    from fastnn.backends import get_backend

    numpy = get_backend("numpy")  # the reference maths: a 1-to-1 layer with weight 1, bias 0
    z = np.linspace(-5, 5, 401)[:, None]
    one, zero = np.ones((1, 1)), np.zeros(1)
    fig = _figure(12, 3.5)
    for ax, name in zip(fig.subplots(1, 3), ("relu", "tanh", "sigmoid"), strict=True):
        a = numpy.linear(z, one, zero, name)
        slope = numpy.linear_backward(np.ones_like(a), z, one, a, name, need_dx=True)[0]
        ax.plot(z[:, 0], a[:, 0], label=name)
        ax.plot(z[:, 0], slope[:, 0], "--", label="derivative")
        ax.axhline(0, color="gray", lw=0.5)
        ax.axvline(0, color="gray", lw=0.5)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def save_all(model: Any, X_test: Any, y_test: Any, out_dir: str | os.PathLike) -> list[Path]:
    """Write the five figures as ``out_dir/<name>.png``; returns the paths."""
    from fastnn.io import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "curves": curves(model),
        "confusion": confusion(model, X_test, y_test),
        "mistakes": mistakes(model, X_test, y_test),
        "weights": weights(model),
        "activations": activations(),
    }
    paths = []
    for name, fig in figures.items():
        path = out / f"{name}.png"
        atomic_write(path, lambda f, fig=fig: fig.savefig(f, format="png", dpi=DPI))
        paths.append(path)
    return paths
