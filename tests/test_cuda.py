"""The cupy backend where no GPU is: CUDA sources compile with nvcc, and asking for cupy gives
a one-line reason. Its equivalence with numpy runs in test_backend_equivalence.py (the shared
``backend`` fixture), which skips it unless a CUDA device works."""

import shutil
import subprocess
from pathlib import Path

import pytest

from fastnn import MLPClassifier
from fastnn._compat import cuda_device_problem
from fastnn.backends import available_backends, backend_names, get_backend
from fastnn.cli import main
from fastnn.errors import BackendUnavailableError

CUDA_DIR = Path(__file__).parents[1] / "kernels" / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc")


def test_every_kernel_the_backend_loads_has_a_source():
    pytest.importorskip("cupy", reason="CuPy is not installed (the gpu extra)")
    from fastnn.backends.cupy import KERNELS

    assert sorted(KERNELS) == [p.name for p in SOURCES]


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on this machine")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, arch, tmp_path):
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
