"""Two identical trainings at once, each in its own process with all cores' threads: how much
each slows down next to the other, against the same training alone (the issue's bar for the
numba backend: within 2.5x). Reported, not asserted: a shared machine's timings drift.

Both children start, set up and compile before anything is timed; the solo rounds run one of
them while the other waits idle on its input, then each round starts both at the same moment.
Under ``--benchmark-disable`` (CI's smoke run) only fastnn-numba's two children start and
train one tiny run each, to check the machinery: a pair of processes costs seconds to start.
"""

from __future__ import annotations

import dataclasses
import statistics

import pytest

from bench.concurrent import IMPLEMENTATIONS, Child, warm_up
from bench.conftest import settle
from bench.workloads import CONCURRENT, synthetic_mnist
from fastnn.backends import unavailable_reason

SOLO_ROUNDS = 3
ROUNDS = 3
SMOKE = dataclasses.replace(CONCURRENT, rows=512, epochs=1)


def skip_unavailable(impl: str) -> None:
    if impl.startswith("fastnn-"):
        reason = unavailable_reason(impl.removeprefix("fastnn-"))
        if reason:
            pytest.skip(f"{impl}: {reason}")
    else:
        pytest.importorskip("torch", reason="PyTorch is not installed (the bench extra)")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_concurrent(benchmark, impl, record):
    if benchmark.disabled and impl != "fastnn-numba":
        pytest.skip("--benchmark-disable: fastnn-numba's smoke run checks the machinery")
    skip_unavailable(impl)
    w = SMOKE if benchmark.disabled else CONCURRENT
    if impl == "fastnn-numba":  # compile here, once, into numba's on-disk cache: the two
        warm_up(impl, w.base, *synthetic_mnist(seed=0, n=1024))  # children then only load it
    solo: list[float] = []
    pairs: list[tuple[float, float]] = []
    with Child(impl, w.rows, w.epochs) as a, Child(impl, w.rows, w.epochs) as b:

        def both_ready() -> None:
            a.wait_ready()
            b.wait_ready()
            settle()

        def together() -> None:
            a.go()
            b.go()
            pairs.append((a.done(), b.done()))

        for _ in range(1 if benchmark.disabled else SOLO_ROUNDS):
            both_ready()  # b waits on its input, idle
            a.go()
            solo.append(a.done())
        benchmark.group = w.name
        benchmark.name = impl
        benchmark.pedantic(together, setup=both_ready, rounds=ROUNDS, iterations=1)
    alone = statistics.median(solo)
    slowdown = [statistics.median(t[i] for t in pairs) / alone for i in (0, 1)]
    benchmark.extra_info.update(
        {"solo_seconds": solo, "concurrent_seconds": pairs, "slowdown": max(slowdown)}
    )
    note = f"2 at once: {slowdown[0]:.1f}x / {slowdown[1]:.1f}x solo ({alone:.3f} s)"
    record(benchmark, w, impl, solo[0], note=note)
