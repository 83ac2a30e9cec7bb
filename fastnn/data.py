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
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastnn.errors import DataError
from fastnn.io import NpzReader, check_declared_size, read_npy

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

    ``seed`` fixes the hold-out split of single-table sources (digits, CSV). Test labels that
    never occur in the training set give a ``DataWarning`` naming them.
    """
    data = _load_source(source, seed, data_home)
    for split in ("train", "test"):
        X = getattr(data, f"X_{split}")
        if len(X) == 0 or X.shape[1] == 0:
            raise DataError(f"{source}: the {split} set is empty (shape {X.shape})")
    warn_unseen_labels(source, data.y_test, data.y_train, "never occur in the training set")
    return data


def warn_unseen_labels(source: str, labels: np.ndarray, known: np.ndarray, why: str) -> None:
    """A DataWarning naming the test ``labels`` outside ``known`` (``why``: where they are
    missing): a model cannot predict them, so its accuracy on those samples is 0."""
    unseen = np.setdiff1d(labels, known)
    if len(unseen):
        shown = ", ".join(map(str, unseen[:10].tolist())) + (", ..." if len(unseen) > 10 else "")
        count = int(np.isin(labels, unseen).sum())
        warnings.warn(
            f"{source}: test label(s) {shown} {why}; the model cannot predict them, so its "
            f"accuracy on those {count} test samples is 0",
            DataWarning,
            stacklevel=3,
        )


class DataWarning(UserWarning):
    """Valid but suspicious data: test labels unseen in training, inputs scaled unlike training."""


def _load_source(source: str, seed: int, data_home: str | None) -> Dataset:
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
    _require_file(path)
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
    _require_file(path)
    if path.suffix.lower() == ".npy":
        try:
            with open(path, "rb") as f:
                arr = read_npy(f, os.fstat(f.fileno()).st_size, path, "the array", DataError)
        except (OSError, ValueError, EOFError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{path}: not a readable .npy array ({_first_line(exc)})") from exc
    else:
        arr = read_idx(path)
    if arr.ndim not in (2, 3):
        raise DataError(
            f"{path}: expected images of shape (N, features) or (N, H, W), got {arr.shape}"
        )
    if arr.size == 0:
        raise DataError(f"{path}: holds no images (shape {arr.shape}); nothing to predict")
    return _pixels(arr, path)


def _require_file(path: Path) -> None:
    """A data file must be a regular file: a directory, device or FIFO is refused before it
    is opened (reading /dev/zero or a FIFO would never end)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (a device, FIFO or socket); give a file")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gzipped or not), checking magic, dimensions and exact length."""
    path = Path(path)
    _require_file(path)
    try:
        with open(path, "rb") as plain:
            gz = plain.read(2) == b"\x1f\x8b"
            plain.seek(0)
            f = gzip.GzipFile(fileobj=plain) if gz else plain
            raw = f.read(4)
            if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
                raise DataError(
                    f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}; "
                    "expected 00 00, a type code and a dimension count)"
                )
            ndim, header = raw[3], 4 + 4 * raw[3]
            raw += f.read(header - 4)
            if len(raw) < header:
                raise DataError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
            dims = struct.unpack(f">{ndim}I", raw[4:header])
            dtype = np.dtype(_IDX_DTYPES[raw[2]])
            expected = check_declared_size(path, "its IDX header", dims, dtype, DataError)
            if not gz:  # the size is known: refuse before reading
                _check_idx_length(path, dims, expected, os.fstat(plain.fileno()).st_size - header)
            # at most one byte more than declared, whatever the file expands to
            payload = bytearray()
            while len(payload) <= expected:
                chunk = f.read(min(1 << 24, expected + 1 - len(payload)))
                if not chunk:
                    break
                payload += chunk
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({_first_line(exc)})") from exc
    _check_idx_length(path, dims, expected, len(payload), at_least=gz)
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _check_idx_length(
    path: Path, dims: tuple[int, ...], expected: int, actual: int, at_least: bool = False
) -> None:
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        follow = f"{actual} bytes follow" if actual <= expected or not at_least else "more follow"
        raise DataError(
            f"{path}: {problem}: its header promises shape {dims} ({expected} bytes of data) "
            f"but {follow}"
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
    X = _pixels(np.asarray(X), name, integers=True)  # OpenML's pixels are 0..255
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
        hit = next((path / c for c in candidates if (path / c).exists()), None)
        if hit is None:
            missing.append(stem)
        else:
            _require_file(hit)
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
        if X.size == 0:
            raise DataError(f"{images}: holds no images (its header declares shape {X.shape})")
        image_shape = image_shape or _image_shape(X.shape[1:])
        parts[split] = (_pixels(X, images), _labels(y, labels))
    return Dataset(path.name, *parts["train"], *parts["test"], image_shape)


def _load_npz(path: Path) -> Dataset:
    # each member's header is checked before its data is read (NpzReader); others are skipped
    with NpzReader(path, ".npz archive", DataError) as archive:
        missing = [k for k in NPZ_KEYS if k not in archive.members]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(missing)}; a Keras-style mnist.npz "
                f"holds {', '.join(NPZ_KEYS)}"
            )
        arrays = {k: archive.read(k) for k in NPZ_KEYS}
    for split in ("train", "test"):
        X, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if X.ndim < 2 or y.ndim != 1 or len(X) != len(y):
            raise DataError(
                f"{path}: x_{split} {X.shape} and y_{split} {y.shape} must be (N, ...) and (N,)"
            )
        if X.size == 0:
            raise DataError(
                f"{path}: x_{split} is empty (shape {X.shape}); it needs at least one image"
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
            with warnings.catch_warnings():  # "input contained no data": reported below
                warnings.simplefilter("ignore", UserWarning)
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
    X = _pixels(table[:, 1:], path, integers=_csv_pixels_are_integers(path))
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
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed <= MAX_SEED):
        raise DataError(f"the split seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    counts = np.unique(y, return_counts=True)[1]
    n_test = math.ceil(HOLDOUT_FRACTION * len(y))  # scikit-learn's rounding
    stratified = counts.min() >= 2 and min(n_test, len(y) - n_test) >= len(counts)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X,
        y,
        test_size=HOLDOUT_FRACTION,
        random_state=int(seed),
        stratify=y if stratified else None,
    )
    return Dataset(name, X_tr, y_tr, X_te, y_te, image_shape)


MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit
PIXEL_RULE = (
    "integer pixels (an integer dtype, or CSV pixel cells written without a decimal point) are "
    "0..255 and divided by 255; float pixels must already lie in [0, 1]"
)
_NOT_AN_INTEGER_CELL = re.compile(rb",[^,\n]*[.eEnNiI]")  # a pixel cell: after a comma
_MAX_EXACT_LABEL = 2**53  # float64 (and text parsed through it) holds integers exactly up to here


def _csv_pixels_are_integers(path: Path) -> bool:
    """Whether every pixel cell (all columns but the label's) of a CSV is written as an integer:
    no decimal point, exponent, nan or inf. The header line is skipped."""
    with open(path, "rb") as f:
        f.readline()
        body = f.read()
    if not any(c in body for c in (b".", b"e", b"E", b"n", b"N", b"i", b"I")):
        return True  # the common case (Kaggle's CSVs), at C speed
    return _NOT_AN_INTEGER_CELL.search(body) is None


def _pixels(arr: np.ndarray, source: object, *, integers: bool | None = None) -> np.ndarray:
    """Rows of float32 pixels in [0, 1] by one rule for a whole file (``PIXEL_RULE``): integer
    data is 0..255 and divided by 255, float data must already lie in [0, 1]; anything else is
    refused, naming a value. ``integers`` overrides the dtype (CSV text, OpenML)."""
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{source}: pixel values must be numbers, got dtype {arr.dtype}")
    if arr.ndim < 2 or arr.size == 0:
        raise DataError(f"{source}: holds no pixels (shape {arr.shape})")
    arr = arr.reshape(len(arr), math.prod(arr.shape[1:]))
    if integers is None:
        integers = bool(np.issubdtype(arr.dtype, np.integer))
    if not integers and not np.isfinite(arr).all():
        raise DataError(f"{source}: pixel values contain NaN or infinity")
    top, allowed = (255, "0..255 for integer") if integers else (1, "[0, 1] for float")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > top:
        i, j = divmod(int(np.flatnonzero((arr < 0) | (arr > top))[0]), arr.shape[1])
        raise DataError(
            f"{source}: pixel values span [{lo}, {hi}]: {arr[i, j]} (sample {i}, pixel {j}) is "
            f"outside {allowed} pixels; one rule for a whole file: {PIXEL_RULE}"
        )
    if integers:
        if np.issubdtype(arr.dtype, np.floating) and (arr != np.round(arr)).any():
            raise DataError(f"{source}: integer pixels must be whole numbers")
        return (arr / 255.0).astype(np.float32)
    return arr.astype(np.float32)


def _labels(arr: np.ndarray, source: object) -> np.ndarray:
    """Integer class labels that fit in int64; text (as OpenML gives digits) is parsed."""
    if arr.dtype.kind in "biu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise DataError(
                f"{source}: labels must be whole numbers that fit in int64; got {arr.max()}"
            )
        return arr.astype(np.int64)
    if arr.dtype.kind not in "fUSO":
        raise DataError(f"{source}: labels must be integers, got dtype {arr.dtype}")
    try:
        values = arr.astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: labels must be integers ({_first_line(exc)})") from exc
    bad = ~np.isfinite(values) | (np.abs(values) > _MAX_EXACT_LABEL)
    bad[~bad] |= values[~bad] != np.round(values[~bad])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: labels must be whole numbers of at most 2**53 in size (as floats or "
            f"text); sample {i} has {arr[i : i + 1].tolist()[0]!r}"
        )
    return values.astype(np.int64)


def training_pixel_max(metadata: dict) -> float | None:
    """The largest pixel value (after scaling) of a model's training data, when known: its
    metadata's ``pixel_max``, else 1.0 for the named datasets; None for other data."""
    recorded = metadata.get("pixel_max")
    if isinstance(recorded, (int, float)) and 0 < recorded <= 1:
        return float(recorded)
    run = metadata.get("run") if isinstance(metadata.get("run"), dict) else {}
    return 1.0 if (metadata.get("dataset") or run.get("dataset")) in DATASET_NAMES else None


def _image_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    return tuple(int(s) for s in shape) if len(shape) == 2 else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
