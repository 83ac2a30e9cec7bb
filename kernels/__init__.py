"""Low-level compute kernels, installed as ``fastnn.kernels``.

Each module holds one family of kernels; ``README.md`` beside this file states every
kernel's contract (shapes, dtypes, what it writes in place).
"""

from fastnn.kernels.cache import install as _install_cache_locators

_install_cache_locators()  # before any kernel module decorates a cached function
