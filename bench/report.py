"""The end-of-run table: workload x implementation, throughput, % of sgemm, speed-ups, and the
RESULTS.md section of the numba compile target it was measured for."""

from __future__ import annotations

import functools
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, packages_distributions, version

from bench import sections
from bench.workloads import CONCURRENT

PEERS = ("torch-cpu", "torch-cuda", "sklearn")
GPU_IMPLS = ("fastnn-cupy", "torch-cuda")  # rows whose % sgemm is against the GPU's matmul
# Settings that change what the kernels compile to or how many threads run them; a section's
# command line shows those that were set, so it reproduces the run.
ENV_VARS = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_NUM_THREADS",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY")  # fmt: skip
ENV_PREFIXES = ("OPENBLAS_",)

PREAMBLE = f"""\
# Benchmark results

One section per numba compile target the development machine runs: its own CPU (native) and,
where that has AVX-512, AVX2 (`NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=`, with the peers held to
AVX2 too: `OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2`). A run with
`--bench-report` replaces only its own target's section; `bench/run_all_targets.sh` runs them
all. Generated; do not edit by hand.

One round is one training epoch over 60000 x 784 float32 samples (`inference`: predict_proba on
10000; `fit-*`: one `MLPClassifier.fit` of 10 epochs on those samples, or of 200 epochs on
digits' 1437 training images, each round with the next seed; `fit-digits-lbfgs`: one fit with
`solver="lbfgs"`, `max_iter=200`, to scikit-learn's default `tol`, samples/s counting the
training images once and no GFLOP/s, as each implementation takes its own number of iterations;
`fit-regression`, `fit-diabetes`: one `MLPRegressor.fit` of 10 epochs on 60000 x 784 synthetic
regression samples (`bench/workloads.py`'s regression_like), or of 200 epochs on diabetes' 353
training rows, scored by R^2 on held-out rows;
`concurrent`: two identical
trainings of `small`, {CONCURRENT.rows} samples x {CONCURRENT.epochs} epochs each, started at once
in two processes: the round's time is the slower one's, samples/s and GFLOP/s are one
training's, and the note compares each with the same training alone). GFLOP/s counts the
multiply-adds every implementation must do (x2): forward, weight gradients, and input gradients
of every layer but the first; `% sgemm` is against numpy's float32 matmul on the CPU, and on
the GPU rows (`fastnn-cupy`, `torch-cuda`) against the GPU's own float32 matmul; speed-ups are
peer median / fastnn median from this same run. The inference rows take their 10000 rows
already where they compute: a GPU row times the products and the copy of the probabilities
back, not the upload of the data.
`path` is the code that trained: the numba backend's fused one-hidden-layer kernel (`fused`) or
its BLAS layers (`layered`), or the numpy `reference`.
"""


def table(rows: list[dict], sgemm_gflops: float, gpu_sgemm_gflops: float | None = None) -> str:
    """Markdown table; speed-up = peer median / fastnn median, both from this run. % sgemm is
    against ``sgemm_gflops`` (numpy on the CPU), or on GPU rows against ``gpu_sgemm_gflops``
    (measured here, by ``gpu_sgemm``, when not given; blank where no GPU answers)."""
    peers = [p for p in PEERS if any(r["impl"] == p for r in rows)]
    if gpu_sgemm_gflops is None and any(r["impl"] in GPU_IMPLS for r in rows):
        gpu = gpu_sgemm()
        gpu_sgemm_gflops = gpu[1] if gpu else None
    paths = any(r.get("path") for r in rows)
    head = ["workload", "implementation", *(["path"] if paths else [])]
    head += ["median s", "samples/s", "GFLOP/s", "% sgemm", *(f"vs {p}" for p in peers)]
    notes = any(r.get("note") for r in rows)
    if notes:
        head.append("notes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    medians = {(r["workload"], r["impl"]): r["median"] for r in rows}
    for r in rows:
        cells = [r["workload"], r["impl"], *([r.get("path", "")] if paths else [])]
        reference = gpu_sgemm_gflops if r["impl"] in GPU_IMPLS else sgemm_gflops
        cells += [
            f"{r['median']:.4f}",
            f"{r['samples_per_second']:,.0f}",
            "" if r["gflops"] is None else f"{r['gflops']:.1f}",
            "" if r["gflops"] is None or not reference else f"{100 * r['gflops'] / reference:.0f}%",
        ]
        for p in peers:
            peer = medians.get((r["workload"], p))
            fast = r["impl"].startswith("fastnn-")
            cells.append(f"{peer / r['median']:.2f}x" if fast and peer else "")
        if notes:
            cells.append(r.get("note", ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kernel_path(impl: str, sizes: tuple[int, ...], layered: bool = False) -> str:
    """The code that ran a fastnn row: "fused" or "layered" (numba, as
    ``fastnn.backends.numba.kernel_path`` decides; ``layered`` where the workload always runs
    BLAS products with fused epilogues: inference, and lbfgs's loss and gradient of the whole
    data), "reference" (numpy); "" for the peers and other backends."""
    if impl == "fastnn-numpy":
        return "reference"
    if impl != "fastnn-numba":
        return ""
    from fastnn.backends.numba import kernel_path as numba_path

    return "layered" if layered else numba_path(sizes)


def target() -> tuple[str, str, int]:
    """numba's compile target: (LLVM cpu name, vector ISA, vector bytes); ("no-numba", "no
    numba", 0) where numba is not installed (a GPU machine's run of the cupy rows)."""
    try:
        from fastnn.kernels.target import VECTOR_BYTES, cpu_name, isa
    except ImportError:
        return "no-numba", "no numba", 0
    return cpu_name(), isa(), VECTOR_BYTES


def target_key() -> str:
    """The RESULTS.md section a run belongs to: 'znver5 AVX-512', 'haswell AVX2', ..."""
    name, isa, _ = target()
    return f"{name} {isa}"


def target_settings() -> str:
    """How the target was chosen: the NUMBA_CPU_* assignments, or 'native' (the host CPU)."""
    names = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")
    return " ".join(_assign(n) for n in names if n in os.environ) or "native"


def command_line(args: list[str] | tuple[str, ...]) -> str:
    """The shell command that reproduces this run, with the settings of ENV_VARS it had."""
    env = [n for n in ENV_VARS if n in os.environ]
    env += sorted(n for n in os.environ if n.startswith(ENV_PREFIXES) and n not in env)
    return " ".join([*(_assign(n) for n in env), "pytest", *map(shlex.quote, args)])


def environment(sgemm_gflops: float) -> list[str]:
    """The lines that say where a table was measured: CPU, numba target, BLAS, versions."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for pkg in ("fastnn", "numpy", "numba", "scikit-learn", "torch", *cupy_distributions()):
        try:
            versions.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    name, isa, vector_bytes = target()
    lines = [
        f"- CPU: {cpu}, {os.cpu_count()} cores",
        f"- numba target: {name}, {isa}, {vector_bytes}-byte vectors ({target_settings()})",
        f"- BLAS: {blas_kernels()}; numpy float32 sgemm {sgemm_gflops:.0f} GFLOP/s",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
    ]
    gpu = gpu_sgemm()
    if gpu:
        lines.append(f"- GPU: {gpu[0]}; float32 sgemm {gpu[1]:.0f} GFLOP/s")
    return lines


def cupy_distributions() -> list[str]:
    """The installed distributions that provide the ``cupy`` module: cupy-cuda12x,
    cupy-cuda13x, a source build's cupy, ..."""
    return sorted(set(packages_distributions().get("cupy", [])))


@functools.cache
def gpu_sgemm(n: int = 4096) -> tuple[str, float] | None:
    """(the GPU's name and what measured it, its float32 n x n matmul rate in GFLOP/s), best
    of a few runs, through CuPy (cuBLAS) where the cupy backend works, else through an
    already imported PyTorch with CUDA; None where neither answers."""
    from fastnn._compat import cuda_device_problem

    if cuda_device_problem() is None:
        import cupy

        a = cupy.random.default_rng(0).random((n, n), dtype=cupy.float32)
        sync = cupy.cuda.get_current_stream().synchronize
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        name = f"{name.decode() if isinstance(name, bytes) else name} (CuPy)"
    elif "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        torch = sys.modules["torch"]
        a = torch.rand((n, n), dtype=torch.float32, device="cuda")
        sync = torch.cuda.synchronize
        name = f"{torch.cuda.get_device_name()} (PyTorch)"
    else:
        return None
    best = float("inf")
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        a @ a
        sync()
        best = min(best, time.perf_counter() - t0)
    return name, 2 * n**3 / best / 1e9


def blas_kernels() -> str:
    """Whose kernels numpy's BLAS runs: % sgemm is relative to the BLAS, so a numba kernel
    compiled for wider vectors than the BLAS build uses can pass 100%."""
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        blas = next((i for i in blas if "numpy" in i["filepath"]), blas[0])  # not scipy's
        return f"{blas['internal_api']} {blas['version']} with {blas['architecture']} kernels"
    except (ImportError, IndexError, KeyError):
        return "numpy's BLAS (kernels unknown)"


def section(body: str, sgemm_gflops: float, command: str) -> str:
    """One target's part of RESULTS.md: a heading, when and how, where, the table."""
    name, isa, vector_bytes = target()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {name} ({isa}, {vector_bytes}-byte vectors): {target_settings()}", ""]
    lines += [f"Generated {stamp} by `{command}`.", "", *environment(sgemm_gflops), "", body]
    return "\n".join(lines)


def write_markdown(path: str, body: str, sgemm_gflops: float, command: str) -> None:
    """Write (or replace) this target's section of ``path``, keeping the other targets'."""
    sections.write_section(path, PREAMBLE, target_key(), section(body, sgemm_gflops, command))
    print(f"wrote the {target_key()} section of {path}", file=sys.stderr)


def _assign(name: str) -> str:
    value = os.environ[name]
    return f"{name}={shlex.quote(value)}" if value else f"{name}="
