#!/usr/bin/env bash
# The prepared GPU check of the cupy backend (issue 17), one run of at most 8 minutes.
#
# On a machine with a CUDA GPU, CuPy (and, for the peer, PyTorch with CUDA) preinstalled and no
# network: installs fastnn from this checkout without touching the network, runs the cupy tests
# (equivalence, host logic, estimator, CLI), runs the bench with PyTorch CUDA as the peer, and
# writes every log and RESULTS-gpu.md into $OUT. Each phase runs under `timeout`, capped so that
# the whole run stays within GPU_CHECK_BUDGET seconds (default 420). Where no GPU works (no
# CuPy, no device, a driver that fails a launch) it says why, skips every phase and exits 0.
#
# usage:  OUT=/path/to/folder [PYTHON=python3] [GPU_CHECK_BUDGET=420] bash bench/gpu_check.sh
# exit:   0 when every phase that ran passed (or all were skipped), 1 when one failed or timed
#         out, 2 when $OUT is not given.
# GPU_CHECK_WITH_NUMBA=1 keeps numba in the test phase; by default it is blocked there
# (sys.modules["numba"] = None), as those tests compare cupy with numpy and numba's first
# compile of its kernels would take much of the budget; this also proves that the cupy backend
# runs where numba cannot import.
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${OUT:-}" ]]; then
    echo "gpu_check: set OUT to the folder for the logs and RESULTS-gpu.md" >&2
    exit 2
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
BUDGET=${GPU_CHECK_BUDGET:-420}
GRACE=10 # seconds between timeout's TERM and its KILL
LOG="$OUT/gpu-check.log"
RESULTS="$OUT/RESULTS-gpu.md"
PHASES=() # "| phase | status | seconds | log |" rows of RESULTS-gpu.md
FAILED=0
: >"$LOG"
cd "$REPO" || exit 2
export REPO OUT PYTHON # for the phases, which run in their own bash under timeout

say() { echo "$*" | tee -a "$LOG"; }

# run_phase NAME SECONDS COMMAND...: COMMAND (a program, or an exported function run as
# `bash -c NAME`) with its output in $OUT/NAME.log, killed after SECONDS or what is left of the
# budget, whichever is less.
run_phase() {
    local name=$1 want=$2 left cap t0 rc status
    shift 2
    left=$((BUDGET - SECONDS - GRACE))
    cap=$((want < left ? want : left))
    if ((cap < 15)); then
        skip_phase "$name" "out of time: ${SECONDS}s of the ${BUDGET}s budget spent"
        FAILED=1
        return
    fi
    say "== $name (at most ${cap}s): $*"
    t0=$SECONDS
    timeout -k "$GRACE" "$cap" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
    0) status=passed ;;
    124 | 137) status="timed out after ${cap}s" ;;
    *) status="failed (exit $rc)" ;;
    esac
    ((rc == 0)) || FAILED=1
    tail -n 3 "$OUT/$name.log" | sed 's/^/   /' | tee -a "$LOG"
    say "   $name: $status in $((SECONDS - t0))s"
    PHASES+=("| $name | $status | $((SECONDS - t0)) | [$name.log]($name.log) |")
}

skip_phase() {
    say "SKIP $1: $2"
    PHASES+=("| $1 | skipped: $2 | 0 | |")
}

versions() {
    "$PYTHON" - <<'EOF'
import importlib.metadata as md
import platform

print(f"Python {platform.python_version()} ({platform.machine()})")
names = ["numpy", "scipy", "scikit-learn", "numba", "torch", "pytest", "pytest-benchmark",
         "hypothesis", "setuptools", "pip"]
names += sorted(set(md.packages_distributions().get("cupy", [])))
for name in names:
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
EOF
}

write_results() {
    {
        echo "# GPU check of the cupy backend"
        echo
        local commit
        commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
        echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/gpu_check.sh\`"
        echo "on ${HOSTNAME:-$(uname -n)} in ${SECONDS}s; commit $commit (and the working tree)."
        echo
        echo "- GPU: ${GPU_NAME:-none}"
        echo "- $(tr '\n' ';' <"$OUT/versions.log" | sed 's/;$//; s/;/; /g')"
        echo
        if [[ -n "${SKIPPED:-}" ]]; then
            echo "**Skipped: no usable CUDA GPU: $SKIPPED.**"
            echo
        fi
        echo "| phase | status | seconds | log |"
        echo "|---|---|---|---|"
        printf '%s\n' ${PHASES[@]+"${PHASES[@]}"}
        if [[ -s "$OUT/tests-cupy.log" ]]; then
            echo
            echo "## Tests"
            echo
            echo '```'
            grep -E '^(FAILED|ERROR|SKIPPED) |[0-9]+ (passed|failed|skipped|errors?)' \
                "$OUT/tests-cupy.log" | tail -n 60
            echo '```'
        fi
        if [[ -s "$OUT/estimator-cli.log" ]]; then
            echo
            echo "## Estimator and CLI"
            echo
            echo '```'
            grep -E '^(estimator|cli|FAIL)' "$OUT/estimator-cli.log"
            echo '```'
        fi
        if [[ -s "$OUT/bench-report.md" ]]; then
            echo
            echo "## Bench (fastnn-cupy and torch-cuda)"
            echo
            sed -n '/^## /,$p' "$OUT/bench-report.md" | sed 's/^## /### /'
        fi
    } >"$RESULTS"
    say "wrote $RESULTS"
}

say "gpu_check: fastnn at $REPO, python $PYTHON, logs in $OUT, budget ${BUDGET}s"
export -f versions
timeout 60 bash -c versions >"$OUT/versions.log" 2>&1
if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi >"$OUT/nvidia-smi.log" 2>&1
    GPU_NAME=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader 2>/dev/null | head -n 1)
else
    echo "nvidia-smi is not on this machine" >"$OUT/nvidia-smi.log"
fi

# The one probe of fastnn itself (fastnn._compat: a real launch, not only a device count).
SKIPPED=$(timeout 60 "$PYTHON" -c '
from fastnn._compat import cuda_device_problem
print(cuda_device_problem() or "")' 2>"$OUT/probe.log")
rc=$?
if ((rc != 0)); then
    SKIPPED="the probe of fastnn._compat failed (exit $rc; see probe.log)"
fi
if [[ -n "$SKIPPED" ]]; then
    say "SKIP: no usable CUDA GPU: $SKIPPED"
    for phase in install tests-cupy estimator-cli bench; do
        skip_phase "$phase" "no usable CUDA GPU"
    done
    write_results
    exit 0
fi
say "GPU: ${GPU_NAME:-unknown (no nvidia-smi)}"

# ---- install, without the network ----------------------------------------------------------
install() {
    rm -rf "$OUT/site"
    PIP_BREAK_SYSTEM_PACKAGES=1 "$PYTHON" -m pip install --no-deps --no-build-isolation \
        --no-index -e "$REPO" && return 0
    # No pip, or a read-only site: a finder for fastnn.kernels (kernels/ installed under
    # fastnn/), as the editable install would add, loaded from PYTHONPATH by sitecustomize.
    echo "pip could not install fastnn; falling back to a sitecustomize finder"
    mkdir -p "$OUT/site" && cat >"$OUT/site/sitecustomize.py" <<EOF
# written by bench/gpu_check.sh: fastnn.kernels from $REPO/kernels, as the editable install maps it
import importlib.abc, importlib.util, sys

class _Kernels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "fastnn.kernels":
            return None
        return importlib.util.spec_from_file_location(
            name, "$REPO/kernels/__init__.py", submodule_search_locations=["$REPO/kernels"])

sys.meta_path.append(_Kernels())
EOF
}
export -f install
run_phase install 60 bash -c install
if [[ -f "$OUT/site/sitecustomize.py" ]]; then
    export PYTHONPATH="$OUT/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" - >>"$OUT/install.log" 2>&1 <<'EOF' ||
import importlib.util, os, sys
spec = importlib.util.find_spec("fastnn.kernels")
where = [os.path.realpath(p) for p in spec.submodule_search_locations]
kernels = os.path.realpath(os.path.join(os.environ["REPO"], "kernels"))
print(f"fastnn.kernels from {where}")
sys.exit(0 if kernels in where else f"not from this checkout's {kernels}")
EOF
    say "warning: fastnn.kernels does not come from this checkout (see install.log)"

# ---- the cupy tests ------------------------------------------------------------------------
if "$PYTHON" -c 'import pytest, hypothesis' 2>/dev/null; then
    # nvcc's checks (named *nvcc*) run on any CPU; here: what needs the device, and the host
    # logic again with the real CuPy installed.
    # scikit-learn's estimator checks, hundreds of small fits, are left to CPU backends.
    TESTS="not nvcc and (test_cuda or test_cupy_host"
    TESTS+=" or (test_sklearn_compat and cupy and not test_sklearn_estimator_checks)"
    TESTS+=" or (test_backend_equivalence and (cupy or property_based)))"
    ARGS=(-p no:cacheprovider -v -rfEs --maxfail=40 --durations=10
        --junitxml="$OUT/tests-cupy.xml")
    PLUGINS=$(mktemp -d)
    if [[ "${GPU_CHECK_WITH_NUMBA:-0}" != 1 ]]; then # a plugin, so that xdist's workers load it
        echo 'import sys; sys.modules["numba"] = None  # written by gpu_check.sh' \
            >"$PLUGINS/gpu_check_without_numba.py"
        ARGS+=(-p gpu_check_without_numba)
    fi
    if "$PYTHON" -c 'import xdist' 2>/dev/null; then
        ARGS+=(-n 4)
    fi
    run_phase tests-cupy 180 env PYTHONPATH="$PLUGINS${PYTHONPATH:+:$PYTHONPATH}" \
        "$PYTHON" -m pytest "${ARGS[@]}" tests/test_cuda.py tests/test_cupy_host.py \
        tests/test_sklearn_compat.py tests/test_backend_equivalence.py -k "$TESTS"
    rm -rf "$PLUGINS"
else
    skip_phase tests-cupy "pytest or hypothesis is not installed"
fi

# ---- estimator and CLI on cupy, against numpy ------------------------------------------------
estimator_cli() {
    "$PYTHON" - <<'EOF'
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits

from fastnn import MLPClassifier

warnings.simplefilter("ignore")
X, y = load_digits(return_X_y=True)
X = X / 16.0
CASES = {"adam": {}, "momentum": {"solver": "sgd", "learning_rate_init": 0.05},
         "dropout": {"dropout": 0.2}, "lbfgs": {"solver": "lbfgs"}}
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
failed = False
for dtype, tol in TOLERANCE.items():
    for case, kw in CASES.items():
        tol_case = tol * (100 if case == "lbfgs" else 1)  # line searches amplify rounding
        fits, seconds = {}, {}
        try:
            for backend in ("numpy", "cupy"):
                t0 = time.perf_counter()
                fits[backend] = MLPClassifier((32,), max_iter=15, backend=backend, dtype=dtype,
                                              random_state=0, n_iter_no_change=99, **kw).fit(X, y)
                seconds[backend] = time.perf_counter() - t0
        except Exception as exc:  # one line per case, and on to the next
            failed = True
            print(f"estimator {case} {dtype}: FAIL {type(exc).__name__}: {exc}".splitlines()[0])
            continue
        ref, got = fits["numpy"], fits["cupy"]
        pairs = list(zip(got.coefs_ + got.intercepts_, ref.coefs_ + ref.intercepts_))
        err = max(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300) for a, b in pairs)
        score_gap = abs(got.score(X, y) - ref.score(X, y))
        ok = err <= tol_case or (dtype == "float32" and score_gap <= 0.02)
        failed |= not ok
        print(f"estimator {case} {dtype}: relative error {err:.2e} (tolerance {tol_case:.0e}), "
              f"score gap {score_gap:.4f}, fit {seconds['cupy']:.2f}s on cupy vs "
              f"{seconds['numpy']:.2f}s on numpy: {'ok' if ok else 'FAIL'}")
raise SystemExit(1 if failed else 0)
EOF
    local status=$? model="$OUT/digits-cupy.npz" args
    for args in "" "--dropout 0.2 --optimizer adam"; do
        # shellcheck disable=SC2086
        if "$PYTHON" -m fastnn train --backend cupy --dataset digits --hidden 32 --epochs 5 \
            --out "$model" --overwrite --quiet $args; then
            echo "cli train --backend cupy $args: ok"
        else
            echo "FAIL cli train --backend cupy $args" && status=1
        fi
    done
    if "$PYTHON" -m fastnn evaluate "$model" --backend cupy; then
        echo "cli evaluate --backend cupy: ok"
    else
        echo "FAIL cli evaluate --backend cupy" && status=1
    fi
    "$PYTHON" -m fastnn info || status=1
    return "$status"
}
export -f estimator_cli
run_phase estimator-cli 60 bash -c estimator_cli

# ---- the bench, PyTorch CUDA as the peer ---------------------------------------------------
if "$PYTHON" -c 'import pytest_benchmark' 2>/dev/null; then
    "$PYTHON" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null ||
        say "note: PyTorch with CUDA is not usable here: the bench has no torch-cuda peer"
    run_phase bench 120 "$PYTHON" -m pytest -p no:cacheprovider -q -rs bench/test_bench.py \
        -k "fastnn-cupy or torch-cuda" --benchmark-json="$OUT/bench.json" \
        --bench-report="$OUT/bench-report.md"
else
    skip_phase bench "pytest-benchmark is not installed"
fi

write_results
exit "$FAILED"
