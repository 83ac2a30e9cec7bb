"""numba's on-disk cache of the kernels is stamped with every kernel source, so that editing
one kernel module (optim.py) invalidates the kernels that inline it (fused_steps, step.py)."""

from pathlib import Path

import fastnn.kernels.cache as cache
from fastnn.kernels.optim import adam_
from fastnn.kernels.step import fused_steps


def test_kernels_are_cached_under_the_kernel_sources_stamp():
    assert cache.install()  # numba's caching internals are the ones the locators build on
    for kernel in (fused_steps, adam_):
        locator = kernel._cache._impl._locator
        assert isinstance(locator, cache._KernelSources), type(locator)
        assert locator.get_source_stamp() == cache.sources_stamp(
            cache.KERNELS, cache._stamps(cache.KERNELS))  # fmt: skip


def test_the_stamp_changes_with_any_kernel_source(tmp_path: Path):
    (tmp_path / "step.py").write_text("def fused(): return update()\n")
    (tmp_path / "optim.py").write_text("def update(): return 1\n")
    before = cache.sources_stamp(tmp_path, cache._stamps(tmp_path))
    assert cache.sources_stamp(tmp_path, cache._stamps(tmp_path)) == before
    (tmp_path / "optim.py").write_text("def update(): return 2\n")
    assert cache.sources_stamp(tmp_path, cache._stamps(tmp_path)) != before


def test_functions_outside_the_kernels_keep_numbas_own_locator(tmp_path: Path):
    from numba import njit

    source = tmp_path / "elsewhere.py"
    source.write_text("def f(x):\n    return x + 1\n")
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    f = njit(cache=True)(namespace["f"])
    assert not isinstance(f._cache._impl._locator, cache._KernelSources)
