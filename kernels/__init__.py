"""Low-level compute kernels, installed as ``fastnn.kernels``.

Each module holds one family of kernels; ``README.md`` beside this file states every
kernel's contract (shapes, dtypes, what it writes in place).
"""
