"""kernels/ installs as ``fastnn.kernels``, from an editable install and from a built wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fastnn

REPO = Path(__file__).resolve().parents[1]


def test_editable_or_source_install_maps_kernels_into_the_package():
    import fastnn.kernels

    assert Path(fastnn.kernels.__file__).resolve() == REPO / "kernels" / "__init__.py"


@pytest.mark.skipif(not (REPO / "pyproject.toml").is_file(), reason="needs the source tree")
def test_built_wheel_contains_and_imports_fastnn_kernels(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("fastnn-*.whl")
    assert wheel.name.startswith(f"fastnn-{fastnn.__version__}-")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    assert "fastnn/kernels/__init__.py" in names
    assert not any(n.startswith("kernels/") for n in names)  # no top-level `kernels`
    code = "import fastnn.kernels, fastnn; print(fastnn.kernels.__file__); print(fastnn.__file__)"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    assert all(Path(p).is_relative_to(tmp_path / "site") for p in out)
