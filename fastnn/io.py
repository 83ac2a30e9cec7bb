"""Model files: an ``.npz`` of parameters plus one JSON metadata entry; no pickle, ever.

Writes are atomic (temporary file in the same directory, fsync, rename), so an interrupted
save leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from fastnn.errors import ModelFileError

FORMAT_VERSION = 1
META_KEY = "fastnn_metadata"
DTYPES = ("float32", "float64")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(fileobj)`` so readers see the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would hide it from others
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


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
    """Read and check a model file: (parameters, metadata, extra arrays). Never executes
    stored code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # ValueError covers pickled objects refused by allow_pickle=False
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable fastnn model file ({reason})") from exc
    if META_KEY not in arrays:
        raise ModelFileError(f"{path}: not a fastnn model file (no {META_KEY} entry)")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelFileError(f"{path}: corrupt metadata ({exc})") from exc
    _check_metadata(path, meta)
    sizes = meta["layer_sizes"]
    params = []
    for i in range(2 * (len(sizes) - 1)):
        key = f"param_{i}"
        layer = i // 2
        shape = (sizes[layer], sizes[layer + 1]) if i % 2 == 0 else (sizes[layer + 1],)
        if key not in arrays:
            raise ModelFileError(f"{path}: parameter {key} is missing")
        p = arrays[key]
        if p.shape != shape or p.dtype != np.dtype(meta["dtype"]):
            raise ModelFileError(
                f"{path}: parameter {key} has shape {p.shape} and dtype {p.dtype}; the metadata "
                f"requires {shape} {meta['dtype']}"
            )
        params.append(p)
    extra = {k.removeprefix("extra_"): a for k, a in arrays.items() if k.startswith("extra_")}
    return params, meta, extra


def _check_metadata(path: Path, meta: Any) -> None:
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: corrupt metadata (not a JSON object)")
    version = meta.get("format_version")
    if not isinstance(version, int):
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
        or not all(isinstance(s, int) and s > 0 for s in sizes)
    ):
        raise ModelFileError(f"{path}: metadata layer_sizes must be a list of positive integers")
    if meta.get("dtype") not in DTYPES:
        raise ModelFileError(f"{path}: metadata dtype must be one of {', '.join(DTYPES)}")
    classes = meta.get("classes")
    if meta.get("estimator") == "MLPRegressor":  # outputs, no classes
        return
    if not isinstance(classes, list) or len(classes) != sizes[-1]:
        raise ModelFileError(f"{path}: metadata classes must list one label per output unit")
