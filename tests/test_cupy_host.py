"""The cupy backend's host side on any machine: ``fastnn.backends.cupy`` imported against a
stand-in ``cupy`` (numpy's arrays, a ``RawModule`` that records what it is asked to compile,
kernels that record their launches), so that what the backend hands CuPy is checked without a
GPU: the source and options of each module (CuPy's cache key), the kernel names, the arguments
of each launch, and the checks made before raw pointers reach a kernel."""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import fastnn.backends
from fastnn.backends.base import Backend
from fastnn.dropout import layer_key, threshold

REPO = Path(__file__).parents[1]
CUDA_DIR = REPO / "kernels" / "cuda"
NVCC = shutil.which("nvcc")
MODULE = "fastnn.backends.cupy"
_MISSING = object()


def fake_cupy() -> types.ModuleType:
    """A module named cupy: numpy's arrays and functions, a RawModule that records its
    arguments in ``.compiled``, kernels that record their launches in ``.launches``."""
    fake = types.ModuleType("cupy")
    fake.compiled, fake.launches = [], []

    class RawModule:
        def __init__(self, code, options=(), name_expressions=()):
            fake.compiled.append(
                {"code": code, "options": tuple(options), "names": tuple(name_expressions)}
            )
            self.names = tuple(name_expressions)

        def get_function(self, name):
            assert name in self.names, f"{name} was not among the names compiled"
            return lambda grid, block, args: fake.launches.append((name, grid, block, args))

    fake.RawModule = RawModule
    fake.asnumpy = np.asarray
    fake.__getattr__ = lambda name: getattr(np, name)
    return fake


@pytest.fixture
def cupy_module():
    """fastnn.backends.cupy freshly imported against the stand-in; sys.modules and the
    package's attribute are put back as they were afterwards (a real CuPy's module included)."""
    saved = {name: sys.modules.get(name, _MISSING) for name in ("cupy", MODULE)}
    saved_attr = fastnn.backends.__dict__.get("cupy", _MISSING)
    sys.modules["cupy"] = fake_cupy()
    sys.modules.pop(MODULE, None)
    try:
        yield importlib.import_module(MODULE)
    finally:
        for name, module in saved.items():
            if module is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        if saved_attr is _MISSING:
            fastnn.backends.__dict__.pop("cupy", None)
        else:
            fastnn.backends.cupy = saved_attr


def launches() -> list:
    """The stand-in's launches so far: (name, grid, block, args)."""
    return sys.modules["cupy"].launches


def test_the_backend_has_exactly_the_reference_interface(cupy_module):
    """As test_maths checks for every available backend, here without a GPU: the dropout
    override (and every other) keeps the base class's names, kinds and defaults."""

    signature = inspect.signature

    def public(cls):
        return {
            n: [(p.name, p.kind, p.default) for p in signature(getattr(cls, n)).parameters.values()]
            for n in dir(cls)
            if not n.startswith("_") and callable(getattr(cls, n))
        }  # fmt: skip

    assert public(cupy_module.CupyBackend) == public(Backend)


def test_activation_codes_agree_with_the_cuda_and_numba_kernels(cupy_module):
    header = (CUDA_DIR / "common.cuh").read_text()
    enum = re.search(r"enum ActivationCode : int \{([^}]*)\}", header).group(1)
    codes = {k.strip().lower(): int(v) for k, v in (e.split("=") for e in enum.split(","))}
    assert cupy_module.ACTIVATION_CODES == codes
    pytest.importorskip("numba", reason="numba is not installed")
    from fastnn.kernels.activations import ACTIVATION_CODES

    assert ACTIVATION_CODES == codes


def test_every_kernel_asked_for_is_compiled_and_instantiated(cupy_module):
    """Each name the backend asks CuPy for is among the module's name expressions, and each
    source instantiates the same templates explicitly (for nvcc's checks); every source is one
    the backend loads."""
    assert sorted(cupy_module.KERNELS) == sorted(p.name for p in CUDA_DIR.glob("*.cu"))
    for source_name, names in cupy_module.KERNELS.items():
        text = (CUDA_DIR / source_name).read_text()
        instantiated = set(re.findall(r"template __global__ void (\w+)<(float|double)>", text))
        assert instantiated == {(k, t) for k in names for t in ("float", "double")}
        for name in names:
            for dtype in ("float32", "float64"):
                cupy_module.kernel(name, dtype)  # the fake asserts the name was compiled


def test_the_code_handed_to_cupy_changes_with_the_headers(cupy_module, tmp_path, monkeypatch):
    """CuPy's kernel cache is keyed on the code and options it is given, not on the headers
    that code includes: common.cuh's text must be part of the code, so that an edit to it
    compiles anew instead of loading stale kernels."""
    folder = tmp_path / "cuda"
    shutil.copytree(CUDA_DIR, folder)
    monkeypatch.setattr(cupy_module, "cuda_dir", lambda: folder)
    compiled = sys.modules["cupy"].compiled

    def code_and_options(source_name):
        cupy_module._module.cache_clear()
        cupy_module._module(source_name)
        return compiled[-1]["code"], compiled[-1]["options"]

    including = [
        f for f in cupy_module.KERNELS if '#include "common.cuh"' in (folder / f).read_text()
    ]
    assert {"dropout.cu", "linear.cu", "loss.cu"} <= set(including)
    for source_name in including:
        before = code_and_options(source_name)
        assert '#include "' not in before[0] and "__host__ __device__" in before[0]
        header = folder / "common.cuh"
        saved = header.read_text()
        header.write_text(saved.replace("x ^= x >> 15;", "x ^= x >> 14;"))
        after = code_and_options(source_name)
        header.write_text(saved)
        assert after != before, f"{source_name}: an edit to common.cuh left CuPy's key unchanged"
        assert "x ^= x >> 14;" in after[0]


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on this machine")
def test_the_code_handed_to_cupy_compiles_alone_with_nvcc(cupy_module, tmp_path):
    """The pasted-in source (headers, #line marks) compiles without warnings, in a folder that
    holds no header to fall back on."""
    for source_name in cupy_module.KERNELS:
        path = tmp_path / source_name
        path.write_text(cupy_module.source(source_name))
        proc = subprocess.run(
            [NVCC, "-std=c++17", "-arch=sm_80", "-Werror", "all-warnings", "-c", str(path),
             "-o", str(tmp_path / "kernel.o")],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr


def test_the_backend_needs_no_numba():
    """Where numba cannot import, cupy is cleanly unavailable without CuPy (no ImportError,
    and ``auto`` takes numpy); with CuPy, the backend's module imports and compiles its
    kernels without importing numba or the fastnn.kernels package."""
    script = "import types\nimport numpy as np\n" + inspect.getsource(fake_cupy)
    script += textwrap.dedent("""
        import sys
        sys.modules["numba"] = None
        sys.modules["cupy"] = None  # CuPy absent
        from fastnn.backends import available_backends, get_backend, unavailable_reason
        from fastnn.errors import BackendUnavailableError

        assert available_backends() == ["numpy"], available_backends()
        assert "CuPy is not installed" in unavailable_reason("cupy")
        assert get_backend("auto").name == "numpy"
        try:
            get_backend("cupy")
            raise AssertionError("cupy without CuPy")
        except BackendUnavailableError as exc:
            print(exc)

        sys.modules["cupy"] = fake_cupy()  # CuPy present
        import fastnn.backends.cupy as cb
        for source_name in cb.KERNELS:
            cb._module(source_name)
        assert sys.modules["numba"] is None and "fastnn.kernels" not in sys.modules
        print("imported without numba")
    """)  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "backend 'cupy' is not available: CuPy is not installed" in proc.stdout
    assert "imported without numba" in proc.stdout


def test_asarray_puts_arrays_in_c_order(cupy_module):
    backend = cupy_module.CupyBackend()
    X = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    got = backend.asarray(X)
    assert got.flags.c_contiguous and np.array_equal(got, X)
    assert backend.asarray(got) is got  # no copy when already so
    assert backend.asarray(X, dtype=np.float32).flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_hands_the_kernel_keep_masks_numbers(cupy_module, dtype):
    """key, threshold and scale as fastnn.dropout.keep_mask takes them (the kernel's rule is
    checked against keep_mask by test_cuda's host program): the scale rounded to the dtype,
    steps modulo 2**32."""
    backend = cupy_module.CupyBackend()
    h = np.asfortranarray(np.linspace(-1, 1, 35, dtype=dtype).reshape(5, 7))
    out, mask = backend.dropout(h, 7, 2**32 + 5, 1, 0.3)
    ((name, grid, block, args),) = launches()
    assert name == f"dropout<{cupy_module._C_TYPES[np.dtype(dtype).name]}>"
    assert args[0].flags.c_contiguous and np.array_equal(args[0], h)
    assert args[1] is out and args[2] is mask
    assert out.shape == mask.shape == (5, 7) and out.dtype == mask.dtype == dtype
    assert [int(a) for a in args[3:5]] == [5, 7]
    assert type(args[5]) is type(args[6]) is np.uint32
    assert int(args[5]) == layer_key(7, 5, 1) and int(args[6]) == threshold(0.3)
    assert type(args[7]) is np.dtype(dtype).type and args[7] == np.dtype(dtype).type(1 / 0.7)
    assert grid[0] * block[0] >= 1


def test_dropout_of_nothing_launches_nothing(cupy_module):
    out, mask = cupy_module.CupyBackend().dropout(np.zeros((0, 4), np.float32), 0, 0, 0, 0.5)
    assert out.shape == mask.shape == (0, 4) and not launches()


def test_optimizer_kernels_refuse_what_their_pointers_cannot_take(cupy_module):
    """In-place operands must be C-contiguous arrays of the parameter's dtype and size (a copy
    would lose the update); a strided gradient is copied; nothing is launched otherwise."""
    backend = cupy_module.CupyBackend()
    param = np.zeros((3, 4), np.float32)
    grad = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="velocity is updated in place and must be C-contiguous"):
        backend.sgd_update(param, grad, np.asfortranarray(np.zeros((3, 4), np.float32)),
                           0.1, 0.9, False, 0.0)  # fmt: skip
    with pytest.raises(ValueError, match="param is updated in place"):
        backend.adam_update(np.asfortranarray(param), grad, param.copy(), param.copy(), 1,
                            0.1, 0.9, 0.999, 1e-8, 0.0)  # fmt: skip
    with pytest.raises(TypeError, match="grad must be a float32 CuPy array of 12 elements"):
        backend.sgd_update(param, grad.astype(np.float64), None, 0.1, 0.0, False, 0.0)
    with pytest.raises(TypeError, match="m must be a float32 CuPy array of 12 elements"):
        backend.adam_update(param, grad, np.zeros(11, np.float32), param.copy(), 1,
                            0.1, 0.9, 0.999, 1e-8, 0.0)  # fmt: skip
    with pytest.raises(TypeError, match="float32 or float64 arrays only"):
        backend.sgd_update(param.astype(np.float16), grad, None, 0.1, 0.0, False, 0.0)
    with pytest.raises(TypeError, match="expected a CuPy array, got builtins.list"):
        backend.sgd_update([0.0], grad, None, 0.1, 0.0, False, 0.0)
    assert not launches()
    velocity = np.zeros_like(param)
    backend.sgd_update(param, np.asfortranarray(grad), velocity, 0.1, 0.9, True, 0.0)
    ((name, _, _, args),) = launches()
    assert name == "sgd<float>" and args[0] is param and args[2] is velocity
    assert args[1].flags.c_contiguous and np.array_equal(args[1], grad)


def test_linear_refuses_a_bias_of_another_dtype_or_size(cupy_module):
    backend = cupy_module.CupyBackend()
    x, W = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="b must be a float32 CuPy array of 4 elements"):
        backend.linear(x, W, np.zeros(4), "relu")
    with pytest.raises(TypeError, match="b must be a float32 CuPy array of 4 elements"):
        backend.linear(x, W, np.zeros(3, np.float32), "relu")
    assert not launches()
    backend.linear(x, W, np.zeros(4, np.float32), "relu")
    ((name, _, _, args),) = launches()
    assert name == "bias_act<float>" and [int(a) for a in args[2:]] == [2, 4, 0]


def test_auto_takes_the_gpu_only_for_steps_of_enough_work(monkeypatch):
    import fastnn.backends as backends

    monkeypatch.setattr(backends, "available_backends", lambda: ["cupy", "numba", "numpy"])
    assert backends.auto_backend(None) == "numba"  # no size given: the best CPU backend
    assert backends.auto_backend(backends.GPU_MIN_STEP_WORK - 1) == "numba"
    assert backends.auto_backend(backends.GPU_MIN_STEP_WORK) == "cupy"
    # a default fit on digits-sized data (batch 200 x 64*100 + 100*10 weights) stays on the CPU
    assert backends.auto_backend(200 * (64 * 100 + 100 * 10)) == "numba"
    monkeypatch.setattr(backends, "available_backends", lambda: ["numpy"])
    assert backends.auto_backend(2**40) == "numpy"
