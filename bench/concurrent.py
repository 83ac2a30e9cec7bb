"""Trainings in child processes that start on command and time only the training, so that two
can be started at the same moment and each compared with one run alone.

Run as ``python -m bench.concurrent IMPL ROWS EPOCHS``. The child prints ``ready`` once its
data, network and kernels (JIT-compiled or loaded from numba's cache) are in place; on ``go``
it trains ROWS synthetic samples for EPOCHS epochs from the same initial parameters and prints
``done SECONDS``, then ``ready`` again; any other line, or end of input, ends it.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.workloads import CONCURRENT, Workload, synthetic_mnist

ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("fastnn-numba", "fastnn-numpy", "torch-cpu")


def constructor(impl: str) -> Callable:
    """``(workload, init, X, y) -> runner`` with ``epoch()``, for one of IMPLEMENTATIONS."""
    from bench.peers import FastnnImpl, TorchImpl

    if impl.startswith("fastnn-"):
        return lambda *a: FastnnImpl(impl.removeprefix("fastnn-"), *a)
    if impl == "torch-cpu":
        return lambda *a: TorchImpl("cpu", *a)
    raise ValueError(f"unknown implementation {impl!r}: one of {', '.join(IMPLEMENTATIONS)}")


def initial_params(w: Workload) -> list[np.ndarray]:
    from fastnn.model import init_params

    return init_params(w.sizes, w.activation, np.float32, np.random.default_rng(0))


def warm_up(impl: str, w: Workload, X: np.ndarray, y: np.ndarray) -> None:
    """A few minibatches, untimed: JIT compilation (or loading numba's on-disk cache, which
    this fills for the processes that come after), thread pools, first-touch allocations."""
    n = 4 * w.batch_size
    constructor(impl)(w, initial_params(w), X[:n], y[:n]).epoch()


def main(argv: list[str] | None = None) -> int:
    impl, rows, epochs = argv if argv is not None else sys.argv[1:]
    w, new = CONCURRENT.base, constructor(impl)
    X, y = synthetic_mnist(seed=0, n=int(rows))
    warm_up(impl, w, X, y)
    while True:
        runner = new(w, initial_params(w), X, y)
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 0
        t0 = time.perf_counter()
        for _ in range(int(epochs)):
            runner.epoch()
        print(f"done {time.perf_counter() - t0!r}", flush=True)


class Child:
    """The parent's handle on one training process (a context manager that ends it)."""

    def __init__(self, impl: str, rows: int, epochs: int) -> None:
        self.log: list[str] = []  # whatever else the child printed, for error messages
        self.ready = False  # it has said ``ready`` since the last ``go``
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.concurrent", impl, str(rows), str(epochs)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1,
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _expect(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {word!r} within {timeout:.0f} s: {self._tail()}") from None
            if line is None:
                code = self.proc.wait()
                raise RuntimeError(f"child exited ({code}) before {word!r}: {self._tail()}")
            if line.split(" ")[0] == word:
                return line
            self.log.append(line)

    def _tail(self) -> str:
        return "\n".join(self.log[-20:]) or "(no output)"

    def wait_ready(self, timeout: float = 900) -> None:
        """Until the child is set up to train (a cold numba cache compiles for minutes)."""
        if not self.ready:
            self._expect("ready", timeout)
            self.ready = True

    def go(self) -> None:
        """Start a training; the child must be ready."""
        assert self.ready, "go before ready"
        self.ready = False
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def done(self, timeout: float = 600) -> float:
        """The seconds the training just started took, as the child timed it."""
        return float(self._expect("done", timeout).split(" ")[1])

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # end of input: the child returns
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
