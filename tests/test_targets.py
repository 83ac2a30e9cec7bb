"""The numba kernels on a second compile target: AVX2 code, whatever the host's own target.

Vector width and register blocks follow numba's target (kernels/target.py), so an AVX-512
machine never runs the AVX2 kernels unless asked: this reruns the kernel tests with
``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=`` in a child pytest, so neither path can rot on
a machine that never runs it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

from fastnn.kernels import target  # noqa: E402

AVX2 = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}
KERNEL_TESTS = ["tests/test_simd.py", "tests/test_backend_equivalence.py"]
ROOT = Path(__file__).resolve().parent.parent


def _child_target(env: dict[str, str]) -> str:
    code = "from fastnn.kernels import target as t; print(t.cpu_name(), t.VECTOR_BYTES, t.isa())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_haswell_without_features_is_an_avx2_target():
    """NUMBA_CPU_NAME alone keeps the host's features (AVX-512 on an AVX-512 host)."""
    env = {**os.environ, **AVX2}
    assert _child_target(env) == "haswell 32 AVX2"


@pytest.mark.skipif(target.VECTOR_BYTES == 32, reason="the native target is already AVX2")
@pytest.mark.skipif(
    "+avx2" not in target.get_host_cpu_features(), reason="this CPU cannot run AVX2 code"
)
def test_kernels_match_numpy_compiled_for_avx2():
    env = {**os.environ, **AVX2}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *KERNEL_TESTS, "-q", "-p", "no:cacheprovider",
         "-k", "not cupy"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    tail = "\n".join(run.stdout.splitlines()[-15:])
    assert run.returncode == 0, f"kernel tests failed on the AVX2 target:\n{tail}\n{run.stderr}"
    assert " passed" in tail and " failed" not in tail, tail
