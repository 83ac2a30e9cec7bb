"""Data loaders on files the tests write: IDX (plain and gzipped), npz, CSV; and their errors."""

import contextlib
import gzip
import io
import os
import signal
import struct
import tracemalloc
import urllib.error
import warnings
import zipfile

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


# ---- bounded reads: what a file's header asks for is checked before it is allocated ----------


def npy_header(shape, descr="<f8") -> bytes:
    """A .npy header declaring ``shape`` (no data follows unless the caller adds it)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def peak_bytes(fn):
    """(result or raised exception, peak bytes Python and numpy allocated while fn ran)."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - returned for the caller to check
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_declaring_a_huge_array_is_refused_before_reading(tmp_path, gz):
    # the 17 MB gzip that expands to 3.9 GB: a header of 60000 x 256 x 256 bytes
    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 60000, 256, 256) + bytes(1000)
    f = tmp_path / ("big-idx3-ubyte" + (".gz" if gz else ""))
    f.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(
        DataError, match=r"big-idx3-ubyte.*declares shape \(60000, 256, 256\).*at most"
    ):
        read_idx(f)


def test_gzip_idx_expanding_past_its_header_stops_at_the_declared_size(tmp_path):
    f = tmp_path / "t-idx1-ubyte.gz"
    f.write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8)) + bytes(40 << 20), 1))
    exc, peak = peak_bytes(lambda: read_idx(f))
    assert isinstance(exc, DataError) and "t-idx1-ubyte.gz: has trailing bytes" in str(exc)
    assert peak < 4 << 20  # not the 40 MB it expands to


def test_idx_larger_than_available_memory_is_refused(tmp_path, monkeypatch, rng):
    import fastnn.io

    monkeypatch.setattr(fastnn.io, "available_memory", lambda: 1000)
    f = tmp_path / "x-idx3-ubyte"
    f.write_bytes(idx_bytes(rng.integers(0, 256, size=(3, 28, 28))))
    with pytest.raises(DataError, match=r"x-idx3-ubyte: .*2.3 KiB\) but only 1000 bytes of mem"):
        read_idx(f)


def write_npz_members(path, members: dict[str, bytes], compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)


def small_npz_members():
    members = {}
    for key, arr in {"x_train": np.zeros((2, 4)), "y_train": np.zeros(2),
                     "x_test": np.zeros((2, 4)), "y_test": np.zeros(2)}.items():  # fmt: skip
        buf = io.BytesIO()
        np.save(buf, arr)
        members[key] = buf.getvalue()
    return members


def test_npz_member_declaring_36_tib_is_refused(tmp_path):
    f = tmp_path / "bomb.npz"
    members = small_npz_members()
    members["x_train"] = npy_header((5_000_000, 1_000_000)) + bytes(40000)  # 36 TiB claimed
    write_npz_members(f, members, zipfile.ZIP_DEFLATED)
    with pytest.raises(DataError, match=r"bomb.npz: x_train declares shape \(5000000, 1000000\)"):
        load(str(f))


def test_npz_member_declaring_more_than_it_holds_is_refused_unallocated(tmp_path):
    f = tmp_path / "short.npz"
    members = small_npz_members()
    members["x_test"] = npy_header((2000, 1000)) + bytes(100)  # 16 MB claimed, 100 bytes held
    write_npz_members(f, members)
    exc, peak = peak_bytes(lambda: load(str(f)))
    assert isinstance(exc, DataError), exc
    assert "short.npz: x_test declares shape (2000, 1000) float64 (15.3 MiB) but holds only" in (
        str(exc)
    )
    assert peak < 4 << 20


def test_npz_member_claiming_an_impossible_expansion_is_refused(tmp_path):
    f = tmp_path / "lie.npz"
    write_npz_members(f, small_npz_members())
    data = bytearray(f.read_bytes())
    # central directory entry of x_train.npy: its uncompressed size (offset 24) says 1 GB
    at = data.rfind(b"PK\x01\x02", 0, data.find(b"x_train.npy", data.find(b"PK\x01\x02")))
    data[at + 24 : at + 28] = struct.pack("<I", 10**9)
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"lie.npz: member x_train.npy claims .* from"):
        load(str(f))


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev-zero"])
def test_inputs_that_are_not_regular_files_are_refused_without_reading(special_file, kind):
    target = special_file("x.npy", kind)
    with pytest.raises(DataError, match="x.npy: (is a directory|not a regular file)"), _alarm(5):
        load_inputs(target)


def test_dev_zero_as_predict_input_is_refused():
    with pytest.raises(DataError, match="/dev/zero: not a regular file"), _alarm(5):
        load_inputs("/dev/zero")


@pytest.mark.parametrize("name", ["data.npz", "data.csv"])
def test_dataset_fifo_or_device_is_refused(tmp_path, name):
    os.mkfifo(tmp_path / name)
    with pytest.raises(DataError, match=f"{name}: not a regular file"), _alarm(5):
        load(str(tmp_path / name))
    (tmp_path / "z.npz").symlink_to("/dev/zero")
    with pytest.raises(DataError, match="z.npz: not a regular file"), _alarm(5):
        load(str(tmp_path / "z.npz"))


def test_idx_directory_with_a_fifo_in_it_is_refused(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    os.mkfifo(tmp_path / IDX_FILES["test_labels"])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: not a regular file"), _alarm(5):
        load(str(tmp_path))


@contextlib.contextmanager
def _alarm(seconds):
    """Fail instead of hanging if a read blocks (a FIFO without a writer)."""

    def timeout(*args):
        raise TimeoutError("blocked reading")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- empty data: an error that names the file, not numpy's "cannot reshape" ---------------


def test_empty_idx_images_name_the_file(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    (tmp_path / IDX_FILES["train_images"]).write_bytes(idx_bytes(np.zeros((0, 28, 28))))
    (tmp_path / IDX_FILES["train_labels"]).write_bytes(idx_bytes(np.zeros(0)))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: holds no images"):
        load(str(tmp_path))


@pytest.mark.parametrize("empty", ["x_train", "x_test", "features"])
def test_empty_npz_arrays_name_the_file(tmp_path, empty):
    f = tmp_path / "e.npz"
    arrays = {"x_train": np.zeros((3, 4)), "y_train": np.zeros(3), "x_test": np.zeros((2, 4)),
              "y_test": np.zeros(2)}  # fmt: skip
    if empty == "features":
        arrays["x_train"] = np.zeros((3, 0))
    else:
        arrays[empty] = np.zeros((0, 4))
        arrays["y" + empty[1:]] = np.zeros(0)
    np.savez(f, **arrays)
    with pytest.raises(DataError, match=r"e.npz: x_(train|test) is empty"):
        load(str(f))


@pytest.mark.parametrize("text", ["", "label,a,b\n"])
def test_empty_csv_names_the_file_without_warnings(tmp_path, text):
    f = tmp_path / "e.csv"
    f.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="e.csv: no data rows"):
            load(str(f))


@pytest.mark.parametrize("kind", ["npy", "idx"])
def test_empty_inputs_name_the_file(tmp_path, kind):
    if kind == "npy":
        f = tmp_path / "e.npy"
        np.save(f, np.zeros((0, 784), np.uint8))
    else:
        f = tmp_path / "e-idx3-ubyte"
        f.write_bytes(idx_bytes(np.zeros((0, 28, 28))))
    with pytest.raises(DataError, match=f"{f.name}: holds no images"):
        load_inputs(f)


def test_npy_input_declaring_more_than_the_file_holds(tmp_path):
    f = tmp_path / "x.npy"
    f.write_bytes(npy_header((5_000_000, 1_000_000), "|u1") + bytes(64))
    with pytest.raises(DataError, match=r"x.npy: the array declares shape \(5000000, 1000000\)"):
        load_inputs(f)
    f.write_bytes(npy_header((100, 784), "|u1") + bytes(64))
    with pytest.raises(DataError, match=r"x.npy: the array declares .* but holds only 64 bytes"):
        load_inputs(f)
