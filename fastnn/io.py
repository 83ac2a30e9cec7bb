"""Model files: an ``.npz`` of parameters plus one JSON metadata entry; no pickle, ever.

Writes are atomic (temporary file in the same directory, fsync, rename), so an interrupted
save leaves the previous file intact. Reads are bounded: each array's ``.npy`` header is
checked against what its zip member holds, against ``MAX_ELEMENTS`` and against the memory
available before anything is allocated, and only the members a model needs are read.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from fastnn.backends.base import HIDDEN_ACTIVATIONS
from fastnn.errors import FastnnError, ModelFileError

FORMAT_VERSION = 1
META_KEY = "fastnn_metadata"
DTYPES = ("float32", "float64")
ESTIMATORS = ("MLPClassifier", "MLPRegressor")
MAX_ELEMENTS = 2**30  # values one array in a file may declare (4 GiB as float32)
_CHUNK = 1 << 24  # bytes read at a time
_DEFLATE_RATIO = 1100  # deflate cannot expand more than ~1032:1; a member claiming more lies


class SaveError(FastnnError, OSError):
    """A file could not be written (disk full, no permission); the previous file is intact."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(fileobj)`` so readers see the old file or the whole new one.

    An OSError (full disk, permissions) becomes a SaveError naming ``path``; no temporary
    file is left behind.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would hide it from others
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise _save_error(path, exc) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _save_error(path: Path, exc: OSError) -> SaveError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"the disk is full ({exc.strerror or exc}); free some space and save again"
    else:
        reason = exc.strerror or str(exc) or type(exc).__name__
    kept = "; the previous file is unchanged" if path.exists() else ""
    err = SaveError(f"cannot write {path}: {reason}{kept}")
    err.errno = exc.errno
    return err


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default`` for numpy values: scalars as Python numbers, arrays as
    lists (an estimator parameter from a grid search's np.arange, a CLI result)."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable, else physical memory), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return None


def check_declared_size(
    path: Any, what: str, shape: tuple[int, ...], dtype: np.dtype, error: type[Exception]
) -> int:
    """The bytes an array of ``shape`` and ``dtype`` that a file declares would take; an
    ``error`` naming the file if over ``MAX_ELEMENTS`` values or the memory available."""
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if count > MAX_ELEMENTS:
        raise error(
            f"{path}: {what} declares shape {tuple(shape)} ({count} values, {_size(nbytes)}); "
            f"fastnn reads at most {MAX_ELEMENTS} values per array: the file is corrupt or not "
            "a dataset fastnn can hold"
        )
    memory = available_memory()
    if memory is not None and nbytes > memory:
        raise error(
            f"{path}: {what} declares shape {tuple(shape)} ({_size(nbytes)}) but only "
            f"{_size(memory)} of memory is available"
        )
    return nbytes


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes} bytes" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""  # unreachable


def read_npy(
    f: IO[bytes],
    held: int,
    path: Any,
    name: str,
    error: type[Exception],
    expect: tuple[tuple[int, ...], str] | None = None,
) -> np.ndarray:
    """One ``.npy`` array from ``f`` (``held`` bytes long), its header checked first: no
    objects (pickle), the declared size within limits and within ``held``, and the shape and
    dtype ``expect`` asks; only then is memory allocated. Format problems are ValueErrors."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"{name}: unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError(
            f"{name} holds Python objects, which only pickle could load; fastnn never unpickles"
        )
    if expect is not None and (shape != expect[0] or dtype != np.dtype(expect[1])):
        raise error(
            f"{path}: parameter {name} has shape {shape} and dtype {dtype}; the metadata "
            f"requires {expect[0]} {expect[1]}"
        )
    nbytes = check_declared_size(path, name, shape, dtype, error)
    held -= f.tell()
    if nbytes > held:
        raise error(
            f"{path}: {name} declares shape {shape} {dtype} ({_size(nbytes)}) but holds only "
            f"{_size(max(held, 0))}; the file is corrupt or crafted"
        )
    flat = np.empty(math.prod(shape), dtype=dtype)
    view = flat.view(np.uint8) if nbytes else np.empty(0, np.uint8)
    done = 0
    while done < nbytes:
        chunk = f.read(min(_CHUNK, nbytes - done))
        if not chunk:
            raise ValueError(f"{name} is truncated ({done} of {nbytes} bytes)")
        view[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
        done += len(chunk)
    return flat.reshape(shape, order="F" if fortran else "C")


class NpzReader:
    """Reads chosen arrays of an ``.npz`` one member at a time with ``read_npy``'s checks; a
    broken archive or member is ``error("<path>: not a readable <kind> (<reason>)")``."""

    def __init__(self, path: Path, kind: str, error: type[Exception]) -> None:
        self.path, self.kind, self.error = path, kind, error
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise self._unreadable(exc) from exc
        self.members = {info.filename.removesuffix(".npy"): info for info in self._zip.infolist()}

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def _unreadable(self, exc: BaseException) -> Exception:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return self.error(f"{self.path}: not a readable {self.kind} ({reason})")

    def read(self, key: str, expect: tuple[tuple[int, ...], str] | None = None) -> np.ndarray:
        """The array ``key``; ``expect`` (shape, dtype) is checked before reading its data."""
        info = self.members[key]
        if info.compress_type == zipfile.ZIP_STORED:
            claim_ok = info.file_size <= info.compress_size
        else:
            claim_ok = info.file_size <= _DEFLATE_RATIO * info.compress_size + 4096
        if not claim_ok:
            raise self.error(
                f"{self.path}: member {info.filename} claims {_size(info.file_size)} from "
                f"{_size(info.compress_size)} of data; the file is corrupt or crafted"
            )
        try:
            with self._zip.open(info) as f:
                return read_npy(f, info.file_size, self.path, key, self.error, expect)
        except FastnnError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, RuntimeError) as exc:  # fmt: skip
            raise self._unreadable(exc) from exc


def save_model_file(
    path: str | os.PathLike,
    params: list[np.ndarray],
    metadata: dict,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """Save parameters ``[W0, b0, ...]``, JSON-serialisable ``metadata`` (numpy values
    included: json_default) and ``extra`` named arrays (training state) atomically."""
    meta = {"format_version": FORMAT_VERSION, **metadata}
    arrays = {f"param_{i}": np.ascontiguousarray(p) for i, p in enumerate(params)}
    arrays.update({f"extra_{k}": np.ascontiguousarray(a) for k, a in (extra or {}).items()})
    arrays[META_KEY] = np.array(json.dumps(meta, default=json_default))
    if not Path(path).parent.is_dir():
        raise ModelFileError(
            f"cannot save model to {path}: directory {Path(path).parent} does not exist"
        )
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_model_file(
    path: str | os.PathLike,
) -> tuple[list[np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a model file: (parameters, metadata, extra arrays). Reads only the
    metadata, ``param_*`` and ``extra_*`` members, each bounded; never executes stored code."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a regular file; give the .npz that save wrote")
    with NpzReader(path, "fastnn model file", ModelFileError) as npz:
        if META_KEY not in npz.members:
            raise ModelFileError(f"{path}: not a fastnn model file (no {META_KEY} entry)")
        try:
            text = npz.read(META_KEY)
            if text.dtype.kind != "U" or text.ndim != 0:
                raise ValueError(f"{META_KEY} is not a string")
            meta = json.loads(str(text))
        except ModelFileError as exc:
            if "not a readable" not in str(exc):
                raise
            raise ModelFileError(f"{path}: corrupt metadata ({exc.__cause__})") from exc
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise ModelFileError(f"{path}: corrupt metadata ({exc})") from exc
        except RecursionError as exc:
            raise ModelFileError(
                f"{path}: corrupt metadata (JSON nested too deeply to read)"
            ) from exc
        _check_metadata(path, meta)
        sizes, dtype = meta["layer_sizes"], meta["dtype"]
        params = []
        for i in range(2 * (len(sizes) - 1)):
            key, layer = f"param_{i}", i // 2
            shape = (sizes[layer], sizes[layer + 1]) if i % 2 == 0 else (sizes[layer + 1],)
            if key not in npz.members:
                raise ModelFileError(f"{path}: parameter {key} is missing")
            p = npz.read(key, (shape, dtype))
            if not np.isfinite(p).all():
                raise ModelFileError(
                    f"{path}: parameter {key} contains NaN or infinity; the model cannot "
                    "predict (retrain it or use an earlier copy)"
                )
            params.append(p)
        extra = {
            k.removeprefix("extra_"): npz.read(k) for k in npz.members if k.startswith("extra_")
        }
    return params, meta, extra


def _check_metadata(path: Path, meta: Any) -> None:
    """Every metadata entry load_model uses has the right type; a ModelFileError says which
    entry is wrong."""

    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"{path}: metadata {what}; the file was edited or is corrupt")

    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: corrupt metadata (not a JSON object)")
    version = meta.get("format_version")
    if not _is_int(version):
        raise ModelFileError(f"{path}: metadata has no format_version; not a fastnn model file")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format {version} is newer than this fastnn reads ({FORMAT_VERSION}); "
            "upgrade fastnn"
        )
    if version < 1:
        raise ModelFileError(f"{path}: unknown model format version {version}")
    sizes = meta.get("layer_sizes")
    if (
        not isinstance(sizes, list)
        or len(sizes) < 2
        or not all(_is_int(s) and s > 0 for s in sizes)
    ):
        raise ModelFileError(f"{path}: metadata layer_sizes must be a list of positive integers")
    if meta.get("dtype") not in DTYPES:
        raise ModelFileError(f"{path}: metadata dtype must be one of {', '.join(DTYPES)}")
    activation = meta.get("activation", "relu")
    if activation not in (*HIDDEN_ACTIVATIONS, "logistic"):
        raise bad(f"activation {activation!r} is unknown; expected one of "
                  f"{', '.join(HIDDEN_ACTIVATIONS)}")  # fmt: skip
    estimator = meta.get("estimator", "MLPClassifier")
    if estimator not in ESTIMATORS:
        raise bad(f"estimator {estimator!r} is unknown; expected one of {', '.join(ESTIMATORS)}")
    if not isinstance(meta.get("out_activation", "softmax"), str):
        raise bad("out_activation must be a string")
    for key in ("estimator_params", "user", "training_state"):
        if not isinstance(meta.get(key, {}), dict):
            raise bad(f"{key} must be a JSON object, got {type(meta[key]).__name__}")
    if not all(isinstance(k, str) for k in meta.get("estimator_params", {})):
        raise bad("estimator_params must have string keys")
    history = meta.get("history", [])
    if not isinstance(history, list):
        raise bad(f"history must be a list of epochs, got {type(history).__name__}")
    for i, h in enumerate(history):
        loss = h.get("loss") if isinstance(h, dict) else None
        if not _is_number(loss) or (isinstance(loss, float) and not math.isfinite(loss)):
            raise bad(f"history entry {i} has no finite loss")
        if "samples" in h and not (_is_int(h["samples"]) and h["samples"] >= 0):
            raise bad(f"history entry {i} has samples {h['samples']!r}; expected a count")
    names = meta.get("feature_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad("feature_names must be a list of strings")
    if names and len(names) != sizes[0]:
        raise bad(f"feature_names lists {len(names)} names for {sizes[0]} inputs")
    if estimator == "MLPRegressor":  # outputs, no classes
        return
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) != sizes[-1]:
        raise ModelFileError(f"{path}: metadata classes must list one label per output unit")
    kinds = {bool if isinstance(c, bool) else str if isinstance(c, str) else
             numbers.Real if _is_number(c) else None for c in classes}  # fmt: skip
    if None in kinds or len(kinds) > 1 or any(isinstance(c, float) and not math.isfinite(c)
                                              for c in classes):  # fmt: skip
        raise bad("classes must be labels of one kind: all strings, all numbers or all booleans")
    if len(set(classes)) != len(classes):
        dupes = sorted({repr(c) for c in classes if classes.count(c) > 1})
        raise bad(f"classes lists {', '.join(dupes)} more than once; each label must be unique")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
