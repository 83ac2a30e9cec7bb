"""What input means (issue 16): one pixel-scaling rule that no single value can flip, labels
that fit, warnings for suspicious but valid data, and one-line errors naming the file or flag."""

import struct
import warnings

import numpy as np
import pytest

from fastnn.cli import main
from fastnn.data import load, load_inputs
from fastnn.errors import DataError


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path, labels, pixels, fmt="{}"):
    n = len(pixels[0])
    lines = ["label," + ",".join(f"p{i}" for i in range(n))]
    lines += [
        f"{y}," + ",".join(fmt.format(v) for v in row)
        for y, row in zip(labels, pixels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def idx_bytes(arr, code=0x08, dtype=">u1"):
    arr = np.asarray(arr)
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.asarray(arr).astype(dtype).tobytes()


def write_idx_dir(path, train, y_train, test, y_test, code=0x08, dtype=">u1"):
    path.mkdir()
    (path / "train-images-idx3-ubyte").write_bytes(idx_bytes(train, code, dtype))
    (path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y_train))
    (path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(test, code, dtype))
    (path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(y_test))
    return path


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "digits.npz"
    argv = ["train", "--dataset", "digits", "--backend", "numpy", "--epochs", "3", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


# --- 1. one pixel rule, by type: integers are 0..255, floats must lie in [0, 1] -------------


def test_one_stray_value_in_a_float_csv_is_an_error_not_a_rescale(tmp_path, rng):
    pixels = rng.random((20, 4)).round(3)
    pixels[7, 2] = 1.5
    f = write_csv(tmp_path / "stray.csv", np.arange(20) % 2, pixels)
    with pytest.raises(DataError, match=r"stray.csv: .*1\.5 \(sample 7, pixel 2\).*\[0, 1\]"):
        load(str(f))


def test_float_csv_is_kept_and_integer_csv_divided_whatever_the_values(tmp_path):
    """A CSV of 0s and 1s written as integers is 0..255 data; written as floats, [0, 1] data."""
    ints = write_csv(
        tmp_path / "ints.csv", [0, 1, 0, 1, 0], [[0, 1], [1, 0], [1, 1], [0, 0], [1, 1]]
    )
    floats = write_csv(
        tmp_path / "floats.csv", [0, 1, 0, 1, 0], [[0, 1], [1, 0], [1, 1], [0, 0], [1, 1]], "{}.0"
    )
    assert load(str(ints)).X_train.max() == pytest.approx(1 / 255)
    assert load(str(floats)).X_train.max() == 1.0


def test_label_column_written_as_floats_does_not_make_pixels_floats(tmp_path):
    f = write_csv(tmp_path / "t.csv", ["0.0", "1.0"] * 3, [[0, 255], [255, 0]] * 3)
    assert load(str(f)).X_train.max() == 1.0


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (
            np.full((4, 3, 3), 255.0, np.float32),
            r"255\.0 \(sample 0, pixel 0\) is outside \[0, 1\]",
        ),
        (np.full((4, 3, 3), 16.0), r"16\.0 \(sample 0, pixel 0\) is outside \[0, 1\]"),
        (np.full((4, 3, 3), 300, np.int32), r"300 \(sample 0, pixel 0\) is outside 0\.\.255"),
        (np.full((4, 3, 3), -1, np.int8), r"-1 \(sample 0, pixel 0\) is outside 0\.\.255"),
    ],
)
def test_npz_pixels_outside_their_types_range_name_the_file_and_value(tmp_path, x, match):
    f = tmp_path / "d.npz"
    np.savez(f, x_train=x, y_train=np.arange(4) % 2, x_test=x[:2], y_test=[0, 1])
    with pytest.raises(DataError, match=f"d.npz: .*{match}"):
        load(str(f))


def test_float_idx_files_must_lie_in_0_1(tmp_path, rng):
    imgs = rng.integers(0, 256, size=(6, 4, 4)).astype(np.float32)
    d = write_idx_dir(tmp_path / "f", imgs, np.arange(6) % 2, imgs[:2], [0, 1], 0x0D, ">f4")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: .*outside \[0, 1\]"):
        load(str(d))
    ok = write_idx_dir(
        tmp_path / "ok", imgs / 255, np.arange(6) % 2, imgs[:2] / 255, [0, 1], 0x0D, ">f4"
    )
    np.testing.assert_allclose(load(str(ok)).X_train, imgs.reshape(6, -1) / 255, rtol=1e-6)


def test_predict_refuses_float_inputs_above_one(digits_model, tmp_path, capsys):
    from sklearn.datasets import load_digits

    np.save(tmp_path / "native.npy", load_digits().data[:5])  # float64 0..16
    code, out, err = run(capsys, "predict", digits_model, tmp_path / "native.npy")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "native.npy: " in err and "outside [0, 1]" in err


# --- 2. inputs scaled unlike the training data -----------------------------------------------


def test_predict_warns_when_digits_native_integers_are_read_as_0_255(
    digits_model, tmp_path, capsys
):
    from sklearn.datasets import load_digits

    np.save(tmp_path / "ints.npy", load_digits().data[:5].astype(np.uint8))  # 0..16
    code, out, err = run(capsys, "predict", digits_model, tmp_path / "ints.npy")
    assert code == 0 and len(out.split()) == 5
    assert err.startswith("fastnn: warning: ") and len(err.strip().splitlines()) == 1
    assert "ints.npy" in err and "divide by 16" in err


def test_predict_on_inputs_scaled_as_in_training_is_silent(digits_model, tmp_path, capsys):
    from sklearn.datasets import load_digits

    np.save(tmp_path / "ok.npy", (load_digits().data[:5] / 16).astype(np.float32))
    code, _, err = run(capsys, "predict", digits_model, tmp_path / "ok.npy")
    assert code == 0 and err == ""


# --- 3. labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["1e30", "-1e30", "1e16", "nan"])
def test_csv_labels_that_do_not_fit_are_refused(tmp_path, label):
    f = write_csv(tmp_path / "l.csv", [label, 0, 1, 0], [[1, 2], [3, 4], [5, 6], [7, 8]])
    with pytest.raises(DataError, match="l.csv: labels must be whole numbers"):
        load(str(f))


@pytest.mark.parametrize(
    "y_train",
    [
        np.array([0, 1, 2**63 + 5, 1], dtype=np.uint64),
        np.array(["0", "1", "99999999999999999999", "1"]),
        np.array([0.0, 1.0, 1e19, 1.0]),
    ],
)
def test_npz_labels_that_do_not_fit_are_refused(tmp_path, y_train):
    f = tmp_path / "l.npz"
    x = np.zeros((4, 2, 2), np.uint8)
    np.savez(f, x_train=x, y_train=y_train, x_test=x[:2], y_test=[0, 1])
    with pytest.raises(DataError, match="l.npz: labels must be whole numbers"):
        load(str(f))


def test_text_labels_of_integers_are_parsed(tmp_path):
    f = tmp_path / "l.npz"
    x = np.zeros((4, 2, 2), np.uint8)
    np.savez(f, x_train=x, y_train=np.array(["3", "5", "3", "5"]), x_test=x[:2], y_test=[3, 5])
    assert load(str(f)).y_train.tolist() == [3, 5, 3, 5]


def test_test_labels_never_seen_in_training_warn(tmp_path):
    f = tmp_path / "u.npz"
    x = np.zeros((4, 2, 2), np.uint8)
    np.savez(f, x_train=x, y_train=[0, 1, 0, 1], x_test=x, y_test=[0, 7, 9, 9])
    with pytest.warns(
        UserWarning, match=r"u.npz: test label\(s\) 7, 9 never occur in the training"
    ):
        load(str(f))


def test_train_cli_warns_in_one_line_about_unseen_test_labels(tmp_path, capsys):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)
    f = tmp_path / "u.npz"
    np.savez(f, x_train=x[:200], y_train=d.target[:200] % 5, x_test=x[200:260], y_test=[7] * 60)
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", "--dataset", f, "--epochs", "1", "--quiet", "--out", out)
    assert code == 0 and len(err.strip().splitlines()) == 1
    assert err.startswith("fastnn: warning: ") and "label(s) 7 never occur" in err
    code, _, err = run(capsys, "evaluate", out)
    assert code == 0 and err.startswith("fastnn: warning: ") and "label(s) 7" in err


def test_evaluate_warns_about_labels_outside_the_models_classes(digits_model, tmp_path, capsys):
    x = np.zeros((4, 8, 8), np.uint8)
    f = tmp_path / "other.npz"
    np.savez(f, x_train=x, y_train=[10, 11, 10, 11], x_test=x, y_test=[10, 11, 10, 11])
    code, out, err = run(capsys, "evaluate", digits_model, "--dataset", f)
    assert code == 0 and out.startswith("accuracy 0.0000")
    assert len(err.strip().splitlines()) == 1 and "10, 11 are not among the model's classes" in err


# --- 4. sizes ----------------------------------------------------------------------------------


def test_confusion_figure_stays_bounded_with_700_classes():
    pytest.importorskip("matplotlib")
    from fastnn import plot

    class Model:
        classes_ = np.arange(700)

        def predict(self, X):
            return np.asarray(X)[:, 0].astype(int)

    X = np.arange(700)[:, None]
    fig = plot.confusion(Model(), X, np.arange(700))
    assert max(fig.get_size_inches()) * plot.DPI <= 2000


def test_confusion_figure_of_labels_the_model_never_saw():
    pytest.importorskip("matplotlib")
    from fastnn import plot

    class Model:
        classes_ = np.arange(3)

        def predict(self, X):
            return np.zeros(len(X), int)

    counts = plot.confusion_counts(Model(), np.zeros((4, 1)), [5, 5, 6, 6])
    assert counts.shape == (5, 5) and counts.sum() == 4


# --- 5. messages and warnings ------------------------------------------------------------------


def test_empty_sets_name_the_file(tmp_path, capsys):
    x = np.zeros((3, 2, 2), np.uint8)
    f = tmp_path / "e.npz"
    np.savez(f, x_train=x, y_train=[0, 1, 0], x_test=x[:0], y_test=np.zeros(0, int))
    code, _, err = run(capsys, "train", "--dataset", f, "--out", tmp_path / "m.npz")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "e.npz" in err and "reshape" not in err
    d = write_idx_dir(tmp_path / "idx", x, [0, 1, 0], x[:0], np.zeros(0, np.uint8))
    code, _, err = run(capsys, "train", "--dataset", d, "--out", tmp_path / "m.npz")
    assert code == 2 and "t10k-images-idx3-ubyte" in err and "reshape" not in err


def test_pixel_reader_never_reshapes_an_empty_array_into_numpys_words(tmp_path):
    from fastnn import data

    with pytest.raises(DataError, match="x.npy: holds no"):
        data._pixels(np.zeros((0, 5, 5), np.uint8), "x.npy")


def test_split_seed_out_of_range_is_a_data_error():
    with pytest.raises(DataError, match="seed must be an integer"):
        load("digits", seed=-1)


def test_single_class_evaluate_leaks_no_scikit_learn_warning(tmp_path, capsys):
    x = (np.arange(64 * 10).reshape(10, 8, 8) % 256).astype(np.uint8)
    f = tmp_path / "one.npz"
    np.savez(f, x_train=x, y_train=np.zeros(10, int), x_test=x[:4], y_test=np.zeros(4, int))
    out = tmp_path / "m.npz"
    argv = ["train", "--dataset", f, "--epochs", "1", "--quiet", "--backend", "numpy"]
    assert run(capsys, *argv, "--out", out)[0] == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # whatever reaches the user's shell
        code, _, err = run(capsys, "evaluate", out)
    assert code == 0 and err == "" and not caught


def test_warnings_in_cli_commands_are_one_line(digits_model, tmp_path, capsys, monkeypatch):
    import fastnn.cli as cli

    def noisy(args):
        warnings.warn("first line\nsecond line", RuntimeWarning, stacklevel=1)
        return {}

    monkeypatch.setitem(cli.COMMANDS, "info", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, err = run(capsys, "info")
    assert code == 0 and err == "fastnn: warning: first line\n"


def test_load_inputs_float_above_one_names_the_file(tmp_path):
    np.save(tmp_path / "x.npy", np.full((2, 4), 2.0))
    with pytest.raises(DataError, match=r"x.npy: .*2\.0 \(sample 0, pixel 0\)"):
        load_inputs(tmp_path / "x.npy")


def test_a_model_trained_on_a_file_records_its_pixel_scale_for_predict(tmp_path, capsys):
    """A dataset given as a path has no known scale: train records the training data's
    largest pixel, and predict warns on input far below it (0..16 integers read as 0..255)."""
    import numpy as np

    from fastnn.cli import main

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (120, 16), dtype=np.uint8)
    y = np.arange(120) % 3
    np.savez(tmp_path / "data.npz", x_train=X[:90], y_train=y[:90], x_test=X[90:], y_test=y[90:])
    model = tmp_path / "m.npz"
    assert main(["train", "--dataset", str(tmp_path / "data.npz"), "--hidden", "4",
                 "--epochs", "1", "--out", str(model), "--quiet"]) == 0  # fmt: skip
    np.save(tmp_path / "small.npy", rng.integers(0, 17, (5, 16), dtype=np.uint8))
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp_path / "small.npy")]) == 0
    assert "fastnn: warning:" in capsys.readouterr().err
