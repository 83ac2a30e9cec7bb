"""scikit-learn's own tests of its MLP (``sklearn/neural_network/tests/test_mlp.py`` of the
installed scikit-learn, unmodified) under ``python -m fastnn.accel -m pytest``: every item
passes, private-attribute tests included, with fastnn's float32 default and with
scikit-learn's dtype rule; the accelerator's log says how many calls ran on fastnn."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sklearn

SUITE = Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("dtype", ["", "sklearn"], ids=["float32_default", "sklearn_dtype"])
def test_scikit_learns_suite_passes_under_the_accelerator(tmp_path, dtype, summary_line) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASTNN_DTYPE": dtype}
    result = subprocess.run(
        [sys.executable, "-m", "fastnn.accel", "-v", "-m", "pytest", str(SUITE), "-q",
         "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    tail = result.stdout[-3000:]
    assert result.returncode == 0, tail
    counts = re.search(r"(\d+) passed", tail)
    assert counts and not re.search(r"failed|error|skipped|xfail", tail.splitlines()[-1]), tail
    assert int(counts.group(1)) >= 59  # the file's items in scikit-learn 1.9
    summary = result.stderr.strip().splitlines()[-1]
    fits = {
        m[0]: int(m[1]) for m in re.findall(r"(MLP\w+\.(?:partial_)?fit) fastnn: (\d+)", summary)
    }
    summary_line(f"scikit-learn's test_mlp.py under fastnn.accel, FASTNN_DTYPE={dtype or 'unset'}: "
                 f"{counts.group(0)}; {summary.removeprefix('fastnn.accel: ')}")  # fmt: skip
    assert fits.get("MLPClassifier.fit", 0) >= 50 and fits.get("MLPRegressor.fit", 0) >= 30
