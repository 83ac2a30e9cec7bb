"""The end-of-run table: workload x implementation, throughput, % of sgemm, speed-ups."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

PEERS = ("torch-cpu", "torch-cuda", "sklearn")


def table(rows: list[dict], sgemm_gflops: float) -> str:
    """Markdown table; speed-up = peer median / fastnn median, both from this run."""
    peers = [p for p in PEERS if any(r["impl"] == p for r in rows)]
    head = ["workload", "implementation", "median s", "samples/s", "GFLOP/s", "% sgemm"]
    head += [f"vs {p}" for p in peers]
    notes = any(r.get("note") for r in rows)
    if notes:
        head.append("notes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    medians = {(r["workload"], r["impl"]): r["median"] for r in rows}
    for r in rows:
        cells = [
            r["workload"],
            r["impl"],
            f"{r['median']:.4f}",
            f"{r['samples_per_second']:,.0f}",
            f"{r['gflops']:.1f}",
            f"{100 * r['gflops'] / sgemm_gflops:.0f}%",
        ]
        for p in peers:
            peer = medians.get((r["workload"], p))
            fast = r["impl"].startswith("fastnn-")
            cells.append(f"{peer / r['median']:.2f}x" if fast and peer else "")
        if notes:
            cells.append(r.get("note", ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment(sgemm_gflops: float) -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for pkg in ("fastnn", "numpy", "numba", "scikit-learn", "torch", "cupy-cuda12x"):
        try:
            versions.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; numpy float32 sgemm {sgemm_gflops:.0f} GFLOP/s"
        f" ({_instruction_sets()})",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
    ]


def _instruction_sets() -> str:
    """Whose kernels numpy's BLAS and numba run: % sgemm is relative to the BLAS, so a numba
    kernel compiled for wider vectors than the BLAS build uses can pass 100%."""
    parts = []
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        blas = next((i for i in blas if "numpy" in i["filepath"]), blas[0])  # not scipy's
        name, arch = f"{blas['internal_api']} {blas['version']}", blas["architecture"]
        parts.append(f"{name} with {arch} kernels")
    except (ImportError, IndexError, KeyError):
        pass
    try:
        import llvmlite.binding

        parts.append(f"numba compiles for {llvmlite.binding.get_host_cpu_name()}")
    except ImportError:
        pass
    return "; ".join(parts) or "instruction sets unknown"


def write_markdown(path: str, body: str, sgemm_gflops: float, command: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            f"Generated {stamp} by `{command}`; do not edit by hand.",
            "",
            *environment(sgemm_gflops),
            "",
            "One round is one training epoch over 60000 x 784 float32 samples",
            "(`inference`: predict_proba on 10000; `fit-*`: one `MLPClassifier.fit`",
            "of 10 epochs on those samples, or of 200 epochs on digits' 1437 training",
            "images, each round with the next seed). GFLOP/s counts the multiply-adds",
            "every implementation must do (x2): forward, weight gradients, and input",
            "gradients of every layer but the first; speed-ups are peer median /",
            "fastnn median from this same run.",
            "",
            body,
            "",
        ]
    )
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}", file=sys.stderr)
