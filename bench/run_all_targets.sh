#!/usr/bin/env bash
# Regenerate bench/RESULTS.md (or the file named first): the whole benchmark once per numba
# compile target this machine runs, native and, where native is AVX-512, AVX2; each run
# replaces only its own target's section. Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
report="${1:-bench/RESULTS.md}"
shift || true
native=(env -u NUMBA_CPU_NAME -u NUMBA_CPU_FEATURES)
"${native[@]}" python -m pytest bench --benchmark-only --bench-report "$report" "$@"
isa=$("${native[@]}" python -c 'from fastnn.kernels.target import isa; print(isa())')
if [ "$isa" = "AVX-512" ]; then
    # an AVX2 machine's BLAS and PyTorch run AVX2 kernels too
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 \
        python -m pytest bench --benchmark-only --bench-report "$report" "$@"
fi
