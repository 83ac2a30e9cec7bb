"""An unchanged scikit-learn script under ``python -m fastnn.accel`` against the same script
on scikit-learn: warm (its main() in this process, after one untimed run) and cold (a new
Python process per run: interpreter, imports, kernel-cache loads). fastnn-accel is fastnn's
default float32; fastnn-accel-float64 sets FASTNN_DTYPE=sklearn (scikit-learn's dtype rule)."""

from __future__ import annotations

import runpy
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import fastnn.accel
from bench.conftest import settle
from bench.workloads import SCRIPT_WORKLOADS

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "sklearn_mlp_script.py"
DTYPES = {"sklearn": None, "fastnn-accel": "float32", "fastnn-accel-float64": "sklearn"}
ROUNDS = {"accel-script": 3, "accel-script-cold": 3}
LEAST_ACCURACY = 0.93  # the grid search's test accuracy (scikit-learn's: 0.97)


def run_warm(accelerated: bool) -> dict:
    """The script's main() with sklearn.neural_network's classes as they are or accelerated."""
    if accelerated:
        fastnn.accel.install()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: its max_iter is fixed
            return runpy.run_path(str(SCRIPT), run_name="bench")["main"]()
    finally:
        if accelerated:
            fastnn.accel.uninstall()


def run_cold(accelerated: bool) -> dict:
    """The script in a new Python process; its printed results."""
    import json

    args = ["-m", "fastnn.accel"] if accelerated else []
    out = subprocess.run([sys.executable, *args, str(SCRIPT)], capture_output=True, text=True,
                         check=True, timeout=600).stdout  # fmt: skip
    return json.loads(out)


@pytest.mark.parametrize("impl", list(DTYPES))
@pytest.mark.parametrize("workload", list(SCRIPT_WORKLOADS))
def test_script(benchmark, workload, impl, record, monkeypatch):
    if workload == "accel-script-cold" and impl == "fastnn-accel-float64":
        pytest.skip("cold runs compare the default settings only")
    if DTYPES[impl]:
        monkeypatch.setenv("FASTNN_DTYPE", DTYPES[impl])
    run = run_cold if workload.endswith("-cold") else run_warm
    accelerated = impl != "sklearn"
    results = []

    def round_():
        results.append(run(accelerated))

    t0 = time.perf_counter()
    if not benchmark.disabled:  # (a smoke test runs the script once)
        round_()  # warm-up: kernel cache loads in this process; reported, not timed
        settle()
    first_call = time.perf_counter() - t0
    results.clear()
    benchmark.group = workload
    benchmark.name = impl
    benchmark.pedantic(round_, rounds=ROUNDS[workload], iterations=1)
    accuracy = sum(r["digits"]["test_accuracy"] for r in results) / len(results)
    r2 = sum(r["diabetes"]["test_r2"] for r in results) / len(results)
    note = f"grid search test accuracy {accuracy:.4f}, diabetes R^2 {r2:.3f}; samples = fits"
    assert accuracy > LEAST_ACCURACY, note
    record(benchmark, SCRIPT_WORKLOADS[workload], impl, first_call, note=note)
