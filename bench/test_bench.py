"""Throughput of every fastnn backend and of the peers, one parametrised set of workloads.

Each implementation is first checked to reach numpy's loss on a few unshuffled steps from the
same initial parameters, so a broken fast path cannot post a good time.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from bench.conftest import settle
from bench.peers import FastnnImpl, SklearnImpl, TorchImpl
from bench.workloads import DROPOUT_WORKLOADS, N_INFERENCE, WORKLOADS, Workload
from fastnn.backends import backend_names, get_backend, unavailable_reason
from fastnn.model import init_params

FASTNN = [f"fastnn-{b}" for b in backend_names() if b != "auto"]
IMPLEMENTATIONS = [*FASTNN, "torch-cpu", "torch-cuda", "sklearn"]
ROUNDS = {"seed": 10, "small": 5, "medium": 3, "fullbatch": 10, "inference": 10}
CHECK_ROWS = 2048
_reference: dict[str, np.ndarray | float] = {}


def factory(impl: str):
    """A constructor ``(workload, init, X, y) -> implementation``, or a skip with the reason."""
    if impl.startswith("fastnn-"):
        backend = impl.removeprefix("fastnn-")
        reason = unavailable_reason(backend)
        if reason:
            pytest.skip(f"{impl}: {reason}")
        return lambda *a: FastnnImpl(backend, *a)
    if impl.startswith("torch-"):
        torch = pytest.importorskip("torch", reason="PyTorch is not installed (the bench extra)")
        device = impl.removeprefix("torch-")
        if device == "cuda" and not torch.cuda.is_available():
            pytest.skip("torch-cuda: no CUDA device")
        return lambda *a: TorchImpl(device, *a)
    return SklearnImpl


def initial_params(w: Workload) -> list[np.ndarray]:
    return init_params(w.sizes, w.activation, np.float32, np.random.default_rng(0))


def few_steps_result(make, w: Workload, X: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """predict_proba of the initial network (inference), or the loss after a few steps."""
    Xc, yc = X[:CHECK_ROWS], y[:CHECK_ROWS]
    if w.inference:
        return make(w, initial_params(w), Xc, yc).predict_proba(Xc)
    wc = dataclasses.replace(w, batch_size=min(w.batch_size, CHECK_ROWS // 4))
    impl = make(wc, initial_params(w), Xc[: 4 * wc.batch_size], yc[: 4 * wc.batch_size])
    for _ in range(2):
        impl.epoch(shuffle=False)
    numpy = get_backend("numpy")
    params = [np.asarray(p, dtype=np.float32) for p in impl.get_params()]
    return float(numpy.softmax_xent(numpy.forward(params, Xc, w.activation), yc)[0])


def check_matches_numpy(make, w: Workload, X: np.ndarray, y: np.ndarray) -> None:
    """A few unshuffled steps (or one inference) must reproduce the numpy reference."""
    if w.name not in _reference:
        _reference[w.name] = few_steps_result(factory("fastnn-numpy"), w, X, y)
    result, expected = few_steps_result(make, w, X, y), _reference[w.name]
    if w.inference:
        np.testing.assert_allclose(result, expected, atol=1e-4, err_msg="predict_proba differs")
    else:
        assert result == pytest.approx(expected, rel=2e-3), "loss after a few steps differs"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_throughput(benchmark, workload, impl, mnist_like, record):
    w = WORKLOADS[workload]
    make = factory(impl)
    X, y = mnist_like
    check_matches_numpy(make, w, X, y)
    runner = make(w, initial_params(w), X, y)
    if w.inference:
        X_inf = X[:N_INFERENCE]

        def round_():
            return runner.predict_proba(X_inf)
    else:
        round_ = runner.epoch
    t0 = time.perf_counter()
    round_()  # warm-up: JIT compilation, GPU start, caches; reported, not timed
    first_call = time.perf_counter() - t0
    settle()
    benchmark.group = workload
    benchmark.name = impl
    benchmark.pedantic(round_, rounds=ROUNDS[workload], iterations=1)
    record(benchmark, w, impl, first_call)


DROPOUT_ROUNDS = {"small": 7, "medium": 5}  # with the warm-up, within SCHEDULE_EPOCHS


@pytest.mark.parametrize("workload", list(DROPOUT_WORKLOADS))
def test_dropout_schedule_cost(benchmark, workload, mnist_like, record):
    """fastnn-numba's epoch with dropout and a learning-rate schedule (the "-on" rows) beside
    the same workload without them ("-off"): what they cost on the fused path (small) and on
    the layered one (medium). Checked first against numpy's loss after a few steps with the
    same masks and rates. An "-on" row also times an "-off" epoch before each of its rounds,
    so that its note compares the two under the same load (a shared machine's drifts
    otherwise swamp a few percent between two rows timed a minute apart)."""
    w = DROPOUT_WORKLOADS[workload]
    make = factory("fastnn-numba")
    X, y = mnist_like
    check_matches_numpy(make, w, X, y)
    base = workload.split("-")[0]
    runner = make(w, initial_params(w), X, y)
    t0 = time.perf_counter()
    runner.epoch()  # warm-up: JIT compilation and caches; reported, not timed
    first_call = time.perf_counter() - t0
    w_off = DROPOUT_WORKLOADS[f"{base}-dropout-off"]
    paired = make(w_off, initial_params(w_off), X, y) if w.dropout else None
    off_times: list[float] = []

    def time_an_off_epoch() -> None:
        settle()
        t0 = time.perf_counter()
        paired.epoch()
        off_times.append(time.perf_counter() - t0)
        settle()

    if paired is not None:
        paired.epoch()  # its warm-up
    settle()
    benchmark.group = f"{base}-dropout"
    benchmark.name = workload
    setup = None if paired is None else time_an_off_epoch
    benchmark.pedantic(runner.epoch, setup=setup, rounds=DROPOUT_ROUNDS[base], iterations=1)
    note = ""
    if off_times and benchmark.stats is not None:
        off = float(np.median(off_times))
        on = benchmark.stats.stats.median
        note = f"off epochs between these rounds: median {off:.4f} s, on / off {on / off:.3f}"
    record(benchmark, w, "fastnn-numba", first_call, note=note)
