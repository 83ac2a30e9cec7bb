"""fastnn.cores: free cores from the machine's busy time less this process's own; the fused
kernel's threads, whose results must not depend on how many run or what else runs."""

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

from fastnn import cores
from fastnn.backends import get_backend


def _clock(monkeypatch, wall, own, busy):
    monkeypatch.setattr(cores.time, "perf_counter", lambda: wall[0])
    monkeypatch.setattr(cores.time, "process_time", lambda: own[0])
    monkeypatch.setattr(cores, "_machine_busy_seconds", lambda: busy[0])


def test_free_cores_leave_out_what_other_processes_use(monkeypatch):
    wall, own, busy = [0.0], [0.0], [0.0]
    _clock(monkeypatch, wall, own, busy)
    free = cores.FreeCores(cores=4)
    wall[0], own[0], busy[0] = 1.0, 2.0, 2.0  # only this process: all 4 free
    assert free() == 4
    wall[0], own[0], busy[0] = 2.0, 3.0, 5.0  # another process kept 2 cores busy
    assert free() == 2
    wall[0], own[0], busy[0] = 3.0, 3.5, 9.5  # others on every core: still one thread
    assert free() == 1
    wall[0] = 3.01  # too soon to measure: the previous answer
    busy[0] = 9.5
    assert free() == 1


def test_free_cores_without_proc_stat_are_all_cores(monkeypatch):
    monkeypatch.setattr(cores, "_machine_busy_seconds", lambda: None)
    free = cores.FreeCores(cores=3)
    monkeypatch.setattr(cores, "MIN_INTERVAL", 0.0)
    assert free() == 3


def test_machine_busy_seconds_reads_this_machine():
    busy = cores._machine_busy_seconds()
    assert busy is None or busy > 0


def _fused_problem():
    """Data and initial parameters of a network whose fused steps take several tiles."""
    from fastnn.model import init_params

    rng = np.random.default_rng(0)
    X = rng.random((650, 20)).astype(np.float32)
    y = rng.integers(0, 5, size=650)
    return X, y, init_params((20, 30, 5), "relu", np.float32, rng)


def _fused_train(X, y, ps: list, threads: int | None = None) -> None:
    """Three fused Adam epochs of ps in place, on ``threads`` threads (else the free cores)."""
    from fastnn.optim import Optimizer, init_state
    from fastnn.train import train

    be = get_backend("numba")
    opt = Optimizer("adam", 0.01)
    with be.limit_threads(threads):
        train(be, ps, init_state(be, opt, ps), X, y, activation="relu", opt=opt, epochs=3,
              batch_size=600, shuffle=True, rng=np.random.default_rng(1))  # fmt: skip


def test_fused_training_is_bitwise_the_same_at_any_thread_count():
    """The thread count follows the free cores from one call to the next; the fused kernel
    cuts rows into tiles by the most threads, so a trajectory cannot depend on it."""
    numba = pytest.importorskip("numba")
    X, y, params = _fused_problem()
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        ps = [p.copy() for p in params]
        _fused_train(X, y, ps, threads)
        results.append(ps)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def _fused_run(out: list) -> None:
    X, y, ps = _fused_problem()
    _fused_train(X, y, ps)
    out.extend(ps)


def check_concurrent_fused_runs() -> None:
    """Three fused runs started at once from three Python threads, each with helper threads
    of its own, finish and give bitwise what one run alone gives."""
    alone, together = [], [[] for _ in range(3)]
    _fused_run(alone)
    threads = [threading.Thread(target=_fused_run, args=(out,)) for out in together]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a fused run did not finish"
    for out in together:
        assert len(out) == len(alone)
        for a, b in zip(alone, out, strict=True):
            np.testing.assert_array_equal(a, b)


def test_fused_runs_keep_no_reference_to_the_data():
    """Helper threads outlive a run; they must not keep its arrays (a user's 60000 x 784
    training set) alive after it."""
    pytest.importorskip("numba")
    X, y, ps = _fused_problem()
    _fused_train(X, y, ps, threads=2)
    data = weakref.ref(X)
    del X
    deadline = time.monotonic() + 5  # a helper may still be finishing its part
    while data() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert data() is None


def test_helper_threads_end_after_the_thread_they_serve():
    """A fit on a thread of its own (a thread per request, say) leaves no helper threads
    behind once that thread has ended."""
    pytest.importorskip("numba")

    def helpers() -> int:
        return sum(t.name.startswith("fastnn-") for t in threading.enumerate())

    before = helpers()
    X, y, ps = _fused_problem()
    fit = threading.Thread(target=_fused_train, args=(X, y, ps, 2))
    fit.start()
    fit.join()
    deadline = time.monotonic() + 10  # a sleeping helper looks at its caller every second
    while helpers() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert helpers() == before


def test_fused_runs_from_several_threads_at_once_match_a_run_alone():
    pytest.importorskip("numba")
    check_concurrent_fused_runs()


def test_fused_runs_with_more_threads_than_cores_match_a_run_alone():
    """4 threads a run (NUMBA_NUM_THREADS=4, and 4 cores as far as fastnn.cores can tell) on
    any machine, 2 cores in CI: three runs at once, oversubscribed, wait for each other at
    every step without hanging."""
    pytest.importorskip("numba")
    root = Path(__file__).resolve().parent
    code = ("import os; os.cpu_count = lambda: 4; import test_cores; "
            "test_cores.check_concurrent_fused_runs(); print('ok')")  # fmt: skip
    env = {**os.environ, "NUMBA_NUM_THREADS": "4"}
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


@pytest.mark.parametrize("sizes, one_thread", [((20, 30, 5), True), ((20, 30, 30, 5), False)])
def test_validation_scores_of_fused_runs_leave_no_blas_thread_spinning(sizes, one_thread):
    """Between epochs of a fused run, the numba backend scores on one BLAS thread (OpenBLAS's
    idle workers spin and take the fused kernel's cores); a layered run keeps its BLAS
    threads, which the next epoch uses."""
    pytest.importorskip("numba")
    from threadpoolctl import threadpool_info

    from fastnn.model import init_params

    be = get_backend("numba")
    params = init_params(sizes, "relu", np.float32, np.random.default_rng(0))

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    with be.scoring_between_epochs(params):
        inside = blas_threads()
    assert blas_threads() == before
    assert inside == ([1] * len(before) if one_thread else before)
