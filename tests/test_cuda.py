"""The cupy backend where no GPU is: CUDA sources compile with nvcc, common.cuh's host-and-device
functions (dropout's hash and mask rule, relu) run on the CPU in a host program and match
numpy bit for bit, asking for cupy gives a one-line reason, and the prepared GPU check skips
cleanly. Its equivalence with numpy runs in test_backend_equivalence.py (the shared ``backend``
fixture) and in the few device tests here, which skip unless a CUDA device works. Tests that
need nvcc carry "nvcc" in their names (bench/gpu_check.sh leaves them to the CPU runs)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastnn import MLPClassifier
from fastnn._compat import cuda_device_problem
from fastnn.backends import available_backends, backend_names, get_backend
from fastnn.backends.base import Backend
from fastnn.cli import main
from fastnn.dropout import keep_mask, layer_key, mix32, mix32_array, threshold
from fastnn.errors import BackendUnavailableError

REPO = Path(__file__).parents[1]
CUDA_DIR = REPO / "kernels" / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on this machine")
needs_device = pytest.mark.skipif(
    cuda_device_problem() is not None, reason=f"no CUDA device: {cuda_device_problem()}"
)


def test_every_kernel_the_backend_loads_has_a_source():
    pytest.importorskip("cupy", reason="CuPy is not installed (the gpu extra)")
    from fastnn.backends.cupy import KERNELS

    assert sorted(KERNELS) == [p.name for p in SOURCES]


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles_with_nvcc(source, arch, tmp_path):
    proc = subprocess.run(
        [NVCC, "-std=c++17", f"-arch={arch}", "-Werror", "all-warnings", "-c", str(source),
         "-o", str(tmp_path / "kernel.o")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_sources_are_packaged():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"fastnn.kernels" = ["cuda/*.cu", "cuda/*.cuh", "README.md"]' in pyproject


@pytest.mark.skipif(cuda_device_problem() is None, reason="a CUDA device works here")
def test_cupy_without_a_device_is_a_clear_error(capsys):
    assert "cupy" in backend_names() and "cupy" not in available_backends()
    with pytest.raises(BackendUnavailableError, match="backend 'cupy' is not available: CuPy"):
        get_backend("cupy")
    with pytest.raises(BackendUnavailableError, match="CuPy"):
        MLPClassifier(backend="cupy").fit([[0.0], [1.0]], [0, 1])
    assert main(["train", "--backend", "cupy", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and cuda_device_problem() in err
    assert get_backend("auto").name != "cupy"


# ---- common.cuh's __host__ __device__ functions, run on the CPU ----------------------------
# A host program (nvcc compiles it for the CPU; no GPU runs it) reads requests on stdin and
# prints what the header's functions return, floats in C's exact %a notation.
HOST_PROGRAM = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "common.cuh"

int main() {
    char op[16];
    while (std::scanf("%15s", op) == 1) {
        if (!std::strcmp(op, "mix")) {  // mix X: mix32(X)
            unsigned int x;
            if (std::scanf("%u", &x) != 1) return 1;
            std::printf("%u\n", mix32(x));
        } else if (!std::strcmp(op, "mask")) {
            // mask KEY THRESHOLD ROWS UNITS SCALE32 SCALE64: per element of the (rows, units)
            // layer in C order, as the dropout kernel takes them: bits, float mask, double mask
            unsigned int key, thr, rows, units;
            char s32[64], s64[64];
            if (std::scanf("%u %u %u %u %63s %63s", &key, &thr, &rows, &units, s32, s64) != 6)
                return 1;
            const float scale32 = (float)std::strtod(s32, nullptr);
            const double scale64 = std::strtod(s64, nullptr);
            for (long long i = 0; i < (long long)rows * units; ++i)
                std::printf("%u %a %a\n", dropout_bits(key, (unsigned int)(i / units),
                                                      (unsigned int)(i % units)),
                            (double)dropout_at(i, units, key, thr, scale32),
                            dropout_at(i, (long long)units, key, thr, scale64));
        } else if (!std::strcmp(op, "act")) {
            // act CODE Z: activate and derivative_from_output of Z, in float and in double
            int code;
            char s[64];
            if (std::scanf("%d %63s", &code, s) != 2) return 1;
            const double z = std::strtod(s, nullptr);
            std::printf("%a %a %a %a\n", (double)activate((float)z, code), activate(z, code),
                        (double)derivative_from_output((float)z, code),
                        derivative_from_output(z, code));
        }
    }
    return 0;
}
"""
# (seed, step, layer, rows, units, rate): seeds and steps at the ends of their 32-bit range
# and past it (steps count modulo 2**32), rates that round 1 / (1 - rate) differently in float
# and double, all or none kept, a one-unit layer
DROPOUT_CASES = [
    (0, 0, 0, 3, 5, 0.5),
    (1, 1, 1, 17, 9, 0.1),
    (2**32 - 1, 2**32 - 1, 3, 8, 33, 0.3),
    (12345, 2**32 + 7, 2, 5, 40, 0.9),
    (7, 123456789, 0, 64, 3, 0.0),
    (99, 5, 4, 4, 4, 0.999),
    (3, 2**40 + 3, 1, 31, 1, 1 / 3),
]


@pytest.fixture(scope="module")
def host_program(tmp_path_factory):
    """Run the host program on lines of requests; its output lines."""
    if NVCC is None:
        pytest.skip("nvcc is not on this machine")
    folder = tmp_path_factory.mktemp("host")
    (folder / "check.cu").write_text(HOST_PROGRAM)
    proc = subprocess.run(
        [NVCC, "-std=c++17", "-arch=sm_80", "-Werror", "all-warnings", f"-I{CUDA_DIR}",
         str(folder / "check.cu"), "-o", str(folder / "check")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    def run(requests: list[str]) -> list[str]:
        done = subprocess.run([str(folder / "check")], input="\n".join(requests) + "\n",
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return done.stdout.splitlines()

    return run


def _bits(values, dtype):
    """The IEEE bits of each value as ``dtype`` (so -0 and 0 differ, NaN equals NaN)."""
    return np.asarray(values, dtype=dtype).view(np.uint32 if dtype == np.float32 else np.uint64)


def test_nvcc_host_mix32_is_fastnn_dropouts(host_program):
    values = [0, 1, 2, 0x9E3779B9, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
    values += [int(v) for v in np.random.default_rng(0).integers(0, 2**32, 200)]
    got = [int(line) for line in host_program([f"mix {v}" for v in values])]
    assert got == [mix32(v) for v in values]
    assert got == mix32_array(np.array(values, dtype=np.uint32)).tolist()


@pytest.mark.parametrize("case", DROPOUT_CASES, ids=str)
def test_nvcc_host_dropout_mask_is_keep_masks_bit_for_bit(host_program, case):
    """The kernel's rule (dropout_at: row and unit of a C-ordered element, bits, threshold,
    scale) given the key, threshold and scales the cupy backend computes on the host: the
    bits of fastnn.dropout's hash, and keep_mask's float32 and float64 masks, bit for bit."""
    seed, step, layer, rows, units, rate = case
    scales = [np.dtype(t).type(1.0 / (1.0 - rate)) for t in (np.float32, np.float64)]
    request = (f"mask {layer_key(seed, step, layer)} {threshold(rate)} {rows} {units} "
               f"{float(scales[0]).hex()} {float(scales[1]).hex()}")  # fmt: skip
    lines = [line.split() for line in host_program([request])]
    assert len(lines) == rows * units
    key = np.uint32(layer_key(seed, step, layer))
    row_keys = mix32_array(np.arange(rows, dtype=np.uint32) ^ key)
    bits = mix32_array(row_keys[:, None] ^ np.arange(units, dtype=np.uint32)[None, :])
    assert [int(b) for b, _, _ in lines] == bits.ravel().tolist()
    for column, dtype in ((1, np.float32), (2, np.float64)):
        got = [float.fromhex(line[column]) for line in lines]
        expected = keep_mask(np, seed, step, layer, (rows, units), rate, dtype).ravel()
        assert np.array_equal(_bits(got, dtype), _bits(expected, dtype)), dtype


def test_nvcc_host_relu_keeps_nan_like_numpy(host_program):
    """relu(NaN) is NaN, as numpy's maximum(z, 0) (the reference) and numba keep it, so that a
    diverging run reaches a NaN loss; -inf and negatives are 0, +inf stays; relu's derivative
    from a NaN output is 0, as the reference's (y > 0)."""
    zs = [float("nan"), float("-inf"), float("inf"), -2.5, -1e-30, 0.0, 1e-30, 3.25]
    lines = [line.split() for line in host_program([f"act 0 {z.hex()}" for z in zs])]
    numpy = Backend()
    for dtype, (act, grad) in ((np.float32, (0, 2)), (np.float64, (1, 3))):
        # a column through a 1 x 1 identity layer: the reference's relu of each value
        z, one = np.array(zs, dtype=dtype)[:, None], np.ones((1, 1), dtype)
        expected = numpy.linear(z, one, np.zeros(1, dtype), "relu")[:, 0]
        got = np.array([float.fromhex(line[act]) for line in lines], dtype=dtype)
        np.testing.assert_array_equal(got, expected)  # NaN where NaN, value for value
        # dx = dz @ 1 = dy * act'(y) with dy = 1: the derivative from the output z
        with np.errstate(invalid="ignore"):  # dW = z.T @ dz: NaN * 0
            expected, _, _ = numpy.linear_backward(np.ones_like(z), z, one, z, "relu", True)
        got = np.array([float.fromhex(line[grad]) for line in lines], dtype=dtype)
        np.testing.assert_array_equal(got, expected[:, 0])


# ---- the cupy backend on a device -----------------------------------------------------------
@needs_device
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_dropout_is_the_references_bit_for_bit(dtype):
    """CupyBackend.dropout's kernel against the base class's keep_mask on numpy: masks and
    masked outputs bit for bit, NaN in h kept where its unit is dropped (a product)."""
    cupy_backend, numpy = get_backend("cupy"), Backend()
    rng = np.random.default_rng(1)
    for seed, step, layer, rows, units, rate in DROPOUT_CASES + [(5, 9, 1, 300, 130, 0.25)]:
        h = rng.normal(size=(rows, units)).astype(dtype)
        h.flat[:: max(1, h.size // 5)] = np.nan
        out, mask = cupy_backend.dropout(cupy_backend.asarray(h), seed, step, layer, rate)
        ref_out, ref_mask = numpy.dropout(h, seed, step, layer, rate)
        for got, expected in ((mask, ref_mask), (out, ref_out)):
            got = cupy_backend.to_numpy(got)
            assert got.dtype == dtype and got.shape == expected.shape
            assert np.array_equal(_bits(got, dtype), _bits(expected, dtype))


@needs_device
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_relu_keeps_nan(dtype):
    cupy_backend = get_backend("cupy")
    z = np.array([[np.nan, -np.inf, np.inf, -1.0, 0.0, 2.0]], dtype=dtype)
    W, b = np.eye(6, dtype=dtype), np.zeros(6, dtype=dtype)
    got = cupy_backend.linear(*(cupy_backend.asarray(a) for a in (z, W, b)), "relu")
    np.testing.assert_array_equal(cupy_backend.to_numpy(got), Backend().linear(z, W, b, "relu"))


# ---- the prepared GPU check, in its no-GPU mode --------------------------------------------
@pytest.mark.skipif(cuda_device_problem() is None, reason="a CUDA device works: the real check")
def test_gpu_check_without_a_gpu_skips_cleanly(tmp_path):
    """bench/gpu_check.sh, as CI runs it: exit 0 within seconds, every phase skipped with the
    reason in its log and in RESULTS-gpu.md, nothing installed."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.perf_counter() - t0 < 60
    reason = cuda_device_problem()
    log = (out / "gpu-check.log").read_text()
    assert f"SKIP: no usable CUDA GPU: {reason}" in log and log in proc.stdout
    for phase in ("install", "tests-cupy", "estimator-cli", "bench"):
        assert f"SKIP {phase}: no usable CUDA GPU" in log
    results = (out / "RESULTS-gpu.md").read_text()
    assert f"Skipped: no usable CUDA GPU: {reason}" in results
    assert not (out / "install.log").exists()


def test_gpu_check_needs_out(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "set OUT" in proc.stderr


# ---- the bench's GPU rows ---------------------------------------------------------------------
def test_bench_environment_names_whichever_cupy_is_installed(monkeypatch):
    from bench import report

    monkeypatch.setattr(report, "packages_distributions", lambda: {"cupy": ["cupy-cuda13x"]})
    real_version = report.version
    monkeypatch.setattr(
        report, "version", lambda n: "14.2.0" if n == "cupy-cuda13x" else real_version(n)
    )
    monkeypatch.setattr(report, "gpu_sgemm", lambda: ("NVIDIA H200 (CuPy)", 50000.0))
    lines = report.environment(100.0)
    assert "cupy-cuda13x 14.2.0" in lines[3]
    assert lines[-1] == "- GPU: NVIDIA H200 (CuPy); float32 sgemm 50000 GFLOP/s"


def test_bench_percent_of_sgemm_compares_gpu_rows_with_the_gpu(monkeypatch):
    from bench import report

    def row(impl, gflops):
        return {"workload": "small", "impl": impl, "median": 1.0, "samples_per_second": 1.0,
                "gflops": gflops}  # fmt: skip

    rows = [row("fastnn-numba", 50.0), row("fastnn-cupy", 500.0), row("torch-cuda", 250.0)]
    cells = {line.split("|")[2].strip(): line.split("|")[6].strip()
             for line in report.table(rows, 100.0, 1000.0).splitlines()[2:]}  # fmt: skip
    assert cells == {"fastnn-numba": "50%", "fastnn-cupy": "50%", "torch-cuda": "25%"}
    monkeypatch.setattr(report, "gpu_sgemm", lambda: None)  # no GPU answers: left blank
    lines = report.table(rows, 100.0).splitlines()[2:]
    assert [line.split("|")[6].strip() for line in lines] == ["50%", "", ""]


@pytest.mark.parametrize("peer", ["fastnn", "torch"])
def test_bench_inference_uploads_its_rows_once(peer, monkeypatch):
    """The timed inference rounds pass the same host array: the implementation puts it on its
    device once, so a GPU round times the products, not the upload."""
    from bench.peers import FastnnImpl, TorchImpl
    from bench.workloads import WORKLOADS
    from fastnn.model import init_params

    w = WORKLOADS["inference"]
    init = init_params(w.sizes, w.activation, np.float32, np.random.default_rng(0))
    X = np.random.default_rng(1).random((20, w.sizes[0]), dtype=np.float32)
    y = np.arange(20) % 10
    if peer == "fastnn":
        owner, attribute = get_backend("numpy"), "asarray"
    else:
        owner, attribute = (
            pytest.importorskip("torch", reason="PyTorch is not installed"),
            "from_numpy",
        )
    uploads, real = [], getattr(owner, attribute)
    monkeypatch.setattr(owner, attribute, lambda a, *r, **k: uploads.append(a) or real(a, *r, **k))
    impl = (
        FastnnImpl("numpy", w, init, X, y) if peer == "fastnn" else TorchImpl("cpu", w, init, X, y)
    )
    uploads.clear()
    X_inf = X[:10]
    first = impl.predict_proba(X_inf)
    for _ in range(3):
        np.testing.assert_array_equal(impl.predict_proba(X_inf), first)
    assert len(uploads) == 1
    impl.predict_proba(X[10:])  # another array: uploaded
    assert len(uploads) == 2


def test_gpu_extras_name_each_cuda_and_no_default_installs_cupy_or_torch():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11's tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["gpu"] == ["cupy-cuda12x>=13"] and extras["gpu-cuda13"] == ["cupy-cuda13x>=13"]
    assert not [d for d in project["dependencies"] if d.startswith(("cupy", "torch"))]
