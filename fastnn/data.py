"""Datasets: ``load(name_or_path)`` gives float32 pixels in [0, 1] and int64 labels.

Sources: ``mnist`` and ``fashion-mnist`` (OpenML through scikit-learn, cached in its data
home), ``digits`` (bundled with scikit-learn, offline), or a path to a directory of the four
IDX files (optionally gzipped), a Keras-style ``.npz``, or a Kaggle-style ``.csv``.
Every file is checked whole before any of it is used.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastnn.errors import DataError

OPENML_NAMES = {"mnist": "mnist_784", "fashion-mnist": "Fashion-MNIST"}
DATASET_NAMES = (*OPENML_NAMES, "digits")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
HOLDOUT_FRACTION = 0.2  # test share of datasets that come as one table (digits, CSV)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SOURCES_HINT = (
    "use --dataset digits (bundled, offline) or a local path: a directory of the four MNIST "
    "IDX files, a Keras-style mnist.npz, or a Kaggle-style CSV"
)


@dataclass
class Dataset:
    """A train/test split: X float32 rows in [0, 1], y int64 labels."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, ...] | None = None


def load(source: str, *, seed: int = 0, data_home: str | None = None) -> Dataset:
    """Load a dataset by name (``mnist``, ``fashion-mnist``, ``digits``) or by path.

    ``seed`` fixes the hold-out split of single-table sources (digits, CSV).
    """
    if source in OPENML_NAMES:
        return _load_openml(source, data_home)
    if source == "digits":
        return _load_digits(seed)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"dataset {source!r} is neither a known name ({', '.join(DATASET_NAMES)}) "
            "nor an existing path"
        )
    if path.is_dir():
        return _load_idx_dir(path)
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    if path.suffix.lower() == ".csv":
        return _load_csv(path, seed)
    raise DataError(
        f"{path}: unsupported dataset file; expected a directory of IDX files, a .npz or a .csv"
    )


def load_inputs(path: str | os.PathLike) -> np.ndarray:
    """Images to predict on: a ``.npy`` array (N, features) or (N, H, W), or an IDX images file."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({_first_line(exc)})") from exc
    else:
        arr = read_idx(path)
    if arr.ndim not in (2, 3):
        raise DataError(
            f"{path}: expected images of shape (N, features) or (N, H, W), got {arr.shape}"
        )
    return _pixels(arr, path)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gzipped or not), checking magic, dimensions and exact length."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({_first_line(exc)})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}; "
            "expected 00 00, a type code and a dimension count)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: its header promises shape {dims} ({expected} bytes of data) "
            f"but {actual} bytes follow"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def _load_openml(name: str, data_home: str | None) -> Dataset:
    from sklearn.datasets import fetch_openml

    try:
        with warnings.catch_warnings():  # scikit-learn warns on each retry; we report once
            warnings.simplefilter("ignore", UserWarning)
            X, y = fetch_openml(
                OPENML_NAMES[name], version=1, as_frame=False, return_X_y=True, data_home=data_home
            )
    except OSError as exc:  # URLError, timeouts and refused connections are all OSErrors
        raise DataError(
            f"cannot download {name!r} from OpenML and it is not cached "
            f"({_first_line(exc)}); {_SOURCES_HINT}"
        ) from exc
    X = _pixels(np.asarray(X), name)
    y = _labels(np.asarray(y), name)
    return Dataset(name, X[:60000], y[:60000], X[60000:], y[60000:], (28, 28))


def _load_digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    return _split("digits", X, digits.target.astype(np.int64), seed, (8, 8))


def _load_idx_dir(path: Path) -> Dataset:
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        candidates = [stem, stem.replace("-idx", ".idx")]
        candidates += [c + ".gz" for c in candidates]
        hit = next((path / c for c in candidates if (path / c).is_file()), None)
        if hit is None:
            missing.append(stem)
        found[key] = hit
    if missing:
        raise DataError(
            f"{path}: missing IDX file(s) {', '.join(missing)} (optionally .gz); {_SOURCES_HINT}"
        )
    parts, image_shape = {}, None
    for split in ("train", "test"):
        images, labels = found[f"{split}_images"], found[f"{split}_labels"]
        X, y = read_idx(images), read_idx(labels)
        if X.ndim < 2 or y.ndim != 1:
            raise DataError(
                f"{images} / {labels}: expected images (N, ...) and labels (N,), "
                f"got shapes {X.shape} and {y.shape}"
            )
        if len(X) != len(y):
            raise DataError(f"{images} has {len(X)} images but {labels} has {len(y)} labels")
        image_shape = image_shape or _image_shape(X.shape[1:])
        parts[split] = (_pixels(X, images), _labels(y, labels))
    return Dataset(path.name, *parts["train"], *parts["test"], image_shape)


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; a Keras-style mnist.npz "
                    f"holds {', '.join(NPZ_KEYS)}"
                )
            arrays = {k: archive[k] for k in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:  # not a zip, truncated, pickled objects
        raise DataError(f"{path}: not a readable .npz archive ({_first_line(exc)})") from exc
    for split in ("train", "test"):
        X, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if X.ndim < 2 or y.ndim != 1 or len(X) != len(y):
            raise DataError(
                f"{path}: x_{split} {X.shape} and y_{split} {y.shape} must be (N, ...) and (N,)"
            )
    return Dataset(
        path.stem,
        _pixels(arrays["x_train"], path),
        _labels(arrays["y_train"], path),
        _pixels(arrays["x_test"], path),
        _labels(arrays["y_test"], path),
        _image_shape(arrays["x_train"].shape[1:]),
    )


def _load_csv(path: Path, seed: int) -> Dataset:
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline()
            table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({_first_line(exc)})") from exc
    except ValueError as exc:  # non-numeric cells, ragged rows; numpy names row and column
        raise DataError(f"{path}: {_first_line(exc)} (rows counted after the header)") from exc
    n_columns = len(header.split(","))
    if table.size == 0:
        raise DataError(f"{path}: no data rows after the header")
    if table.shape[1] != n_columns or n_columns < 2:
        raise DataError(
            f"{path}: header has {n_columns} columns but rows have {table.shape[1]}; expected "
            "a label column followed by the pixel columns"
        )
    X = _pixels(table[:, 1:], path)
    y = _labels(table[:, 0], path)
    side = math.isqrt(X.shape[1])
    return _split(path.stem, X, y, seed, (side, side) if side * side == X.shape[1] else None)


def _split(
    name: str, X: np.ndarray, y: np.ndarray, seed: int, image_shape: tuple[int, ...] | None
) -> Dataset:
    """Seeded hold-out split, stratified when every class has at least two samples."""
    from sklearn.model_selection import train_test_split

    if len(y) < 2:
        raise DataError(f"{name}: {len(y)} sample(s) cannot be split into train and test sets")
    counts = np.unique(y, return_counts=True)[1]
    X_tr, X_te, y_tr, y_te = train_test_split(
        X,
        y,
        test_size=HOLDOUT_FRACTION,
        random_state=seed,
        stratify=y if counts.min() >= 2 else None,
    )
    return Dataset(name, X_tr, y_tr, X_te, y_te, image_shape)


def _pixels(arr: np.ndarray, source: object) -> np.ndarray:
    """Rows of float32 pixels in [0, 1]: integers and floats above 1 are read as 0..255."""
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{source}: pixel values must be numbers, got dtype {arr.dtype}")
    arr = arr.reshape(len(arr), -1)
    if arr.size == 0:
        return arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{source}: pixel values contain NaN or infinity")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 255:
        raise DataError(
            f"{source}: pixel values span [{lo}, {hi}]; expected 0..255 or floats in [0, 1]"
        )
    if np.issubdtype(arr.dtype, np.integer) or hi > 1:
        return (arr / 255.0).astype(np.float32)
    return arr.astype(np.float32)


def _labels(arr: np.ndarray, source: object) -> np.ndarray:
    """Integer class labels; string digits (as OpenML gives them) are parsed."""
    try:
        values = arr.astype(np.float64)
    except ValueError as exc:
        raise DataError(f"{source}: labels must be integers ({_first_line(exc)})") from exc
    if not np.isfinite(values).all() or (values != np.round(values)).any():
        raise DataError(f"{source}: labels must be whole numbers")
    return values.astype(np.int64)


def _image_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    return tuple(int(s) for s in shape) if len(shape) == 2 else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
