"""Data loaders on files the tests write: IDX (plain and gzipped), npz, CSV; and their errors."""

import gzip
import struct
import urllib.error

import numpy as np
import pytest

from fastnn.data import IDX_FILES, load, load_inputs, read_idx
from fastnn.errors import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode an unsigned-byte array as IDX: magic 00 00 08 ndim, big-endian dims, payload."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist_dir(path, rng, n_train=12, n_test=5, gz=False, side=28):
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, side, side)),
        "train_labels": rng.integers(0, 10, size=n_train),
        "test_images": rng.integers(0, 256, size=(n_test, side, side)),
        "test_labels": rng.integers(0, 10, size=n_test),
    }
    path.mkdir(exist_ok=True)
    for key, stem in IDX_FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (path / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (path / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_round_trip(tmp_path, rng, gz):
    arrays = write_mnist_dir(tmp_path / "mnist", rng, gz=gz)
    d = load(str(tmp_path / "mnist"))
    assert d.X_train.shape == (12, 784) and d.X_test.shape == (5, 784)
    assert d.X_train.dtype == np.float32 and d.y_train.dtype == np.int64
    np.testing.assert_allclose(d.X_train, arrays["train_images"].reshape(12, -1) / 255, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, arrays["test_labels"])
    assert d.image_shape == (28, 28)


def test_idx_bad_magic(tmp_path):
    f = tmp_path / "bad-idx3-ubyte"
    f.write_bytes(b"\x01\x02\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"bad-idx3-ubyte: not an IDX file \(magic bytes 01020803"):
        read_idx(f)


def test_idx_truncated_payload(tmp_path, rng):
    f = tmp_path / "t-idx3-ubyte"
    f.write_bytes(idx_bytes(rng.integers(0, 256, size=(3, 4, 4)))[:-5])
    with pytest.raises(DataError, match=r"t-idx3-ubyte: truncated: .*\(3, 4, 4\).*48 bytes.*43"):
        read_idx(f)


def test_idx_trailing_bytes(tmp_path, rng):
    f = tmp_path / "t-idx1-ubyte"
    f.write_bytes(idx_bytes(rng.integers(0, 10, size=4)) + b"\x00")
    with pytest.raises(DataError, match="has trailing bytes"):
        read_idx(f)


def test_idx_corrupt_gzip(tmp_path, rng):
    f = tmp_path / "t-idx1-ubyte.gz"
    f.write_bytes(gzip.compress(idx_bytes(rng.integers(0, 10, size=50)))[:-10])
    with pytest.raises(DataError, match=r"t-idx1-ubyte.gz: cannot read"):
        read_idx(f)


def test_idx_image_label_count_mismatch(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    (tmp_path / IDX_FILES["train_labels"]).write_bytes(idx_bytes(rng.integers(0, 10, size=11)))
    with pytest.raises(
        DataError, match="has 12 images but .*train-labels-idx1-ubyte has 11 labels"
    ):
        load(str(tmp_path))


def test_idx_directory_missing_file(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match="missing IDX file.*t10k-labels-idx1-ubyte"):
        load(str(tmp_path))


def test_keras_npz(tmp_path, rng):
    f = tmp_path / "mnist.npz"
    x_train = rng.integers(0, 256, size=(8, 28, 28)).astype(np.uint8)
    np.savez(f, x_train=x_train, y_train=np.arange(8) % 3, x_test=x_train[:2], y_test=[0, 1])
    d = load(str(f))
    assert d.X_train.shape == (8, 784) and d.y_test.tolist() == [0, 1]
    np.testing.assert_allclose(d.X_train[0], x_train[0].ravel() / 255, rtol=1e-6)


def test_npz_missing_keys(tmp_path):
    f = tmp_path / "data.npz"
    np.savez(f, x_train=np.zeros((2, 4)), y_train=[0, 1])
    with pytest.raises(DataError, match=r"data.npz: missing array\(s\) x_test, y_test"):
        load(str(f))


def test_npz_that_is_not_a_zip(tmp_path):
    f = tmp_path / "data.npz"
    f.write_text("hello")
    with pytest.raises(DataError, match="data.npz: not a readable .npz archive"):
        load(str(f))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    f = tmp_path / "data.npz"
    obj = np.array([{"a": 1}, None], dtype=object)
    np.savez(f, x_train=obj, y_train=obj, x_test=obj, y_test=obj)
    with pytest.raises(DataError, match="data.npz: not a readable .npz archive"):
        load(str(f))


def write_csv(path, rows, header=None):
    n_cols = len(rows[0])
    header = header or ",".join(["label"] + [f"pixel{i}" for i in range(n_cols - 1)])
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")


def test_kaggle_csv_with_seeded_holdout(tmp_path, rng):
    f = tmp_path / "train.csv"
    rows = [[i % 3, *rng.integers(0, 256, size=16).tolist()] for i in range(30)]
    write_csv(f, rows)
    a, b = load(str(f), seed=3), load(str(f), seed=3)
    assert a.X_train.shape == (24, 16) and a.X_test.shape == (6, 16)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert sorted(np.bincount(a.y_test).tolist()) == [2, 2, 2]  # stratified
    assert a.image_shape == (4, 4)
    assert a.X_train.max() <= 1.0


def test_csv_non_numeric_cell(tmp_path):
    f = tmp_path / "train.csv"
    write_csv(f, [[1, 2, 3], [0, "x", 5]])
    with pytest.raises(DataError, match=r"train.csv: could not convert string 'x'"):
        load(str(f))


def test_csv_ragged_rows(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("label,a,b\n1,2,3\n0,4\n")
    with pytest.raises(DataError, match="train.csv: "):
        load(str(f))


def test_csv_header_disagrees_with_rows(tmp_path):
    f = tmp_path / "train.csv"
    write_csv(f, [[1, 2, 3], [0, 4, 5]], header="label,a")
    with pytest.raises(DataError, match="header has 2 columns but rows have 3"):
        load(str(f))


def test_csv_pixels_out_of_range(tmp_path):
    f = tmp_path / "train.csv"
    write_csv(f, [[1, 2, 300], [0, 4, 5]])
    with pytest.raises(DataError, match=r"pixel values span \[2.0, 300.0\]"):
        load(str(f))


def test_csv_fractional_labels(tmp_path):
    f = tmp_path / "train.csv"
    write_csv(f, [[1.5, 2, 3], [0, 4, 5]])
    with pytest.raises(DataError, match="labels must be whole numbers"):
        load(str(f))


def test_digits_is_offline_and_seeded():
    a, b = load("digits", seed=1), load("digits", seed=1)
    assert a.X_train.shape[1] == 64 and len(a.X_train) + len(a.X_test) == 1797
    assert 0 <= a.X_train.min() and a.X_train.max() <= 1
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.image_shape == (8, 8)


def test_openml_offline_without_cache_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)  # scikit-learn's retry delay
    with pytest.raises(
        DataError, match="cannot download 'mnist' from OpenML.*digits.*IDX.*npz.*CSV"
    ):
        load("mnist", data_home=str(tmp_path))


def test_openml_is_split_60k_10k(monkeypatch):
    X = np.tile(np.arange(70000, dtype=np.float64)[:, None] % 256, (1, 784))
    y = np.array([str(i % 10) for i in range(70000)], dtype=object)

    def fake_fetch(name, **kwargs):
        assert name == "mnist_784" and kwargs["as_frame"] is False
        return X, y

    monkeypatch.setattr("sklearn.datasets.fetch_openml", fake_fetch)
    d = load("mnist")
    assert d.X_train.shape == (60000, 784) and d.X_test.shape == (10000, 784)
    assert d.y_test[:3].tolist() == [0, 1, 2] and d.X_train.dtype == np.float32
    assert d.X_train.max() == pytest.approx(1.0)


def test_openml_network_error_is_a_data_error(monkeypatch):
    def offline(name, **kwargs):
        raise urllib.error.URLError("no route")

    monkeypatch.setattr("sklearn.datasets.fetch_openml", offline)
    with pytest.raises(DataError, match="fashion-mnist"):
        load("fashion-mnist")


def test_unknown_name(tmp_path):
    with pytest.raises(DataError, match="'emnist' is neither a known name"):
        load("emnist")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(DataError, match="unsupported dataset file"):
        load(str(tmp_path / "x.txt"))


def test_load_inputs_npy_and_idx(tmp_path, rng):
    imgs = rng.integers(0, 256, size=(3, 28, 28)).astype(np.uint8)
    np.save(tmp_path / "x.npy", imgs)
    (tmp_path / "x-idx3-ubyte").write_bytes(idx_bytes(imgs))
    a, b = load_inputs(tmp_path / "x.npy"), load_inputs(tmp_path / "x-idx3-ubyte")
    assert a.shape == (3, 784)
    np.testing.assert_array_equal(a, b)
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(DataError, match=r"expected images of shape .* got \(5,\)"):
        load_inputs(tmp_path / "bad.npy")
