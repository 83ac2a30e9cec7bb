"""Benchmark fixtures, the sgemm reference rate, and the summary table at the end of the run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench import report
from bench.workloads import synthetic_mnist

_rows: list[dict] = []
_sgemm: list[float] = []


def pytest_addoption(parser):
    parser.addoption(
        "--bench-report",
        default=None,
        metavar="PATH",
        help="also write the summary table, with machine and versions, as Markdown to PATH",
    )


@pytest.fixture(scope="session")
def sgemm_gflops() -> float:
    """This machine's float32 matmul rate (numpy, all threads), best of a few runs."""
    a = np.random.default_rng(0).random((3072, 3072), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(4))
    _sgemm.append(2 * 3072**3 / best / 1e9)
    return _sgemm[0]


@pytest.fixture(scope="session")
def mnist_like():
    return synthetic_mnist(seed=0)


@pytest.fixture
def record(sgemm_gflops):
    def add(benchmark, workload, impl, first_call, note=""):
        stats = benchmark.stats
        if stats is None:  # --benchmark-disable: ran once as a smoke test, nothing to report
            return
        median = stats.stats.median
        row = {
            "workload": workload.name,
            "impl": impl,
            "median": median,
            "samples_per_second": workload.samples / median,
            "gflops": None if workload.flops is None else workload.flops / median / 1e9,
            "first_call_seconds": first_call,
            "path": report.kernel_path(impl, workload.sizes, _layered(workload)),
            "note": note,
        }
        benchmark.extra_info.update(
            {
                "samples_per_second": row["samples_per_second"],
                "gflops": row["gflops"],
                "sgemm_gflops": sgemm_gflops,
                "fraction_of_sgemm": row["gflops"] and row["gflops"] / sgemm_gflops,
                "compile_seconds": max(0.0, first_call - median),
                "path": row["path"],
            }
        )
        _rows.append(row)

    return add


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _rows:
        return
    body = report.table(_rows, _sgemm[0])
    terminalreporter.write_sep("=", "fastnn benchmark summary")
    for line in report.environment(_sgemm[0]):
        terminalreporter.write_line(line)
    terminalreporter.write_line(body)
    path = config.getoption("--bench-report")
    if path:
        command = report.command_line(config.invocation_params.args)
        report.write_markdown(path, body, _sgemm[0], command)


def _layered(workload) -> bool:
    """Whether the workload runs the numba backend's BLAS layers whatever the network."""
    return getattr(workload, "inference", False) or getattr(workload, "solver", "") == "lbfgs"


SETTLE_SECONDS = 0.3


def settle() -> None:
    """Let the worker threads of the previous calls (OpenBLAS, OpenMP) stop spinning before
    timing: they busy-wait for a while after each parallel call and would take a core from
    whatever runs next (measured: the seed epoch 17 ms when quiet, 31 ms right after BLAS)."""
    time.sleep(SETTLE_SECONDS)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
