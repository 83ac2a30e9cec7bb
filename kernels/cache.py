"""numba's on-disk cache of the kernels, invalidated when any kernel source changes.

numba checks a cached function against a hash of its own source file only. fused_steps
(step.py) inlines update_span (optim.py), so after optim.py changed a cached fused_steps kept
the old update (measured: float64 trajectories 4e-8 apart until the cache was deleted). The
locators here are numba's own (NUMBA_CACHE_DIR, beside the source, per user), stamped instead
with a hash of every kernel source; ``install`` puts them first for this package's files, and
runs before any kernel is decorated (kernels/__init__.py).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from numba.core import caching

KERNELS = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=8)
def sources_stamp(directory: Path, stamps: tuple) -> bytes:
    """sha256 over the .py files of ``directory``, in name order; ``stamps`` (their names,
    sizes and modification times) keys the memo, so that an edited file is read again."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.digest()


def _stamps(directory: Path) -> tuple:
    stats = ((p.name, p.stat()) for p in sorted(directory.glob("*.py")))
    return tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


class _KernelSources:
    """A numba cache locator for this package's kernels, stamped with every kernel source."""

    def get_source_stamp(self) -> bytes:
        return sources_stamp(KERNELS, _stamps(KERNELS))

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent != KERNELS:
            return None
        return super().from_function(py_func, py_file)


def _numba(name: str):
    """numba's caching class ``name`` (public since numba 0.61, underscored before)."""
    return getattr(caching, name, None) or getattr(caching, "_" + name, None)


def install() -> bool:
    """Put a kernel-sources locator before each of numba's source-file locators (once);
    False where this numba's caching internals are not the ones known here, which leaves
    numba's own behaviour."""
    impl = _numba("CacheImpl")
    bases = [_numba(n) for n in ("UserProvidedCacheLocator", "InTreeCacheLocator",
                                 "UserWideCacheLocator")]  # fmt: skip
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list) or None in bases or not set(bases) <= set(classes):
        return False
    for base in bases:
        if not any(issubclass(c, _KernelSources) and issubclass(c, base) for c in classes):
            ours = type(f"Kernel{base.__name__.lstrip('_')}", (_KernelSources, base), {})
            classes.insert(classes.index(base), ours)
    return True
