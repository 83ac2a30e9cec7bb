"""Figures, drawn headlessly from a small trained model: each PNG exists, has the expected
size, is not blank, and shows the model's own numbers."""

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed")
from matplotlib.image import imread  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from fastnn import MLPClassifier, plot  # noqa: E402
from fastnn.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model(digits):
    return MLPClassifier((20,), max_iter=15, early_stopping=True, n_iter_no_change=99,
                         random_state=0).fit(digits.X_train, digits.y_train)  # fmt: skip


def _png(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=plot.DPI)
    pixels = imread(path)
    width, height = (fig.get_size_inches() * plot.DPI).round().astype(int)
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].mean(axis=2).std() > 0.05, f"{name}.png is blank"
    return pixels


def test_curves_plot_the_history(model, tmp_path):
    fig = plot.curves(model)
    assert _png(fig, tmp_path, "curves").shape[:2] == (400, 1000)
    loss_ax, acc_ax = fig.axes
    train, val = loss_ax.lines
    np.testing.assert_allclose(train.get_ydata(), model.loss_curve_)
    np.testing.assert_allclose(val.get_ydata(), [h["val_loss"] for h in model.history_])
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), model.validation_scores_)


def test_confusion_counts_come_from_the_model(model, digits, tmp_path):
    counts = plot.confusion_counts(model, digits.X_test, digits.y_test)
    assert counts.sum() == len(digits.y_test)
    expected = confusion_matrix(digits.y_test, model.predict(digits.X_test))
    np.testing.assert_array_equal(counts, expected)
    fig = plot.confusion(model, digits.X_test, digits.y_test)
    _png(fig, tmp_path, "confusion")
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text())
             for t in ax.texts}  # fmt: skip
    assert cells == {(i, j): int(c) for (i, j), c in np.ndenumerate(counts) if c}
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in model.classes_]


def test_mistakes_are_wrong_and_most_confident_first(model, digits, tmp_path):
    rows = plot.most_confident_mistakes(model, digits.X_test, digits.y_test)
    predicted = model.predict(digits.X_test)
    wrong = np.flatnonzero(predicted != digits.y_test)
    assert len(rows) == min(plot.MAX_MISTAKES, len(wrong)) > 0
    assert (predicted[rows] != digits.y_test[rows]).all()
    confidence = model.predict_proba(digits.X_test[rows]).max(axis=1)
    assert (np.diff(confidence) <= 0).all()
    fig = plot.mistakes(model, digits.X_test, digits.y_test)
    _png(fig, tmp_path, "mistakes")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == len(rows) and shown[0].images[0].get_array().shape == (8, 8)
    assert shown[0].get_title().startswith(f"true {digits.y_test[rows[0]]}\npred")


def test_weights_are_the_first_layer(model, tmp_path):
    fig = plot.weights(model)
    _png(fig, tmp_path, "weights")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 20
    np.testing.assert_array_equal(shown[3].images[0].get_array(),
                                  model.coefs_[0][:, 3].reshape(8, 8))  # fmt: skip


def test_activations_follow_the_reference_maths(tmp_path):
    fig = plot.activations()
    assert _png(fig, tmp_path, "activations").shape[:2] == (350, 1200)
    relu, tanh, sigmoid = fig.axes
    z = relu.lines[0].get_xdata()
    np.testing.assert_allclose(relu.lines[0].get_ydata(), np.maximum(z, 0))
    np.testing.assert_allclose(tanh.lines[1].get_ydata(), 1 - np.tanh(z) ** 2, atol=1e-12)
    s = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(sigmoid.lines[1].get_ydata(), s * (1 - s), atol=1e-12)


def test_image_shapes_from_the_input_size():
    assert plot.image_shape(784) == (28, 28) and plot.image_shape(64) == (8, 8)
    assert plot.image_shape(10) is None


def test_train_with_plot_writes_the_five_pngs_and_plot_redraws_them(tmp_path, capsys):
    out, ckpt = tmp_path / "figs", tmp_path / "ck"
    assert main(["train", "--dataset", "digits", "--hidden", "16", "--epochs", "5", "--quiet",
                 "--validation-fraction", "0.1", "--checkpoint-dir", str(ckpt),
                 "--plot", str(out), "--out", str(tmp_path / "m.npz")]) == 0  # fmt: skip
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}.png" for n in plot.FIGURES)
    for name in names:
        assert imread(out / name)[..., :3].std() > 0.05
    for source in (ckpt, tmp_path / "m.npz"):
        again = tmp_path / f"again-{source.name}"
        assert main(["plot", str(source), "--out", str(again)]) == 0
        assert sorted(p.name for p in again.iterdir()) == names
    assert "test split of digits" in capsys.readouterr().out


def test_missing_matplotlib_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--plot", str(tmp_path),
                 "--out", str(tmp_path / "m.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'fastnn[plot]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.npz").exists()  # refused before training
