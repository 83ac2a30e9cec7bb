"""Kernel warm-up: results unchanged by it, the one-time compile notice, and ``fastnn compile``."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn import MLPClassifier, get_backend, warmup
from fastnn.cli import main
from fastnn.io import load_model_file
from fastnn.model import init_params
from fastnn.optim import Optimizer, init_state
from fastnn.train import train

numba = pytest.importorskip("numba")

OPTIMIZERS = (Optimizer("sgd", 0.1, momentum=0.9, nesterov=True), Optimizer("adam", 0.01))


@pytest.fixture
def fresh_notice(monkeypatch):
    """The once-per-process notice not yet printed."""
    monkeypatch.setattr(warmup, "_announced", False)


def _fresh_compile():
    """A compilation numba has neither in memory nor on disk, as on a cold cache."""
    numba.njit(lambda x: x + 1)(1)


@pytest.mark.parametrize("sizes", [(24, 8, 3), (24, 8, 8, 3)], ids=["fused", "layered"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=["nesterov", "adam"])
def test_warm_up_leaves_training_bitwise_unchanged(sizes, opt):
    from fastnn.backends.numba import kernel_path

    assert kernel_path(sizes) == ("fused" if len(sizes) == 3 else "layered")
    be = get_backend("numba")
    data = np.random.default_rng(0)
    X = data.random((50, sizes[0]), dtype=np.float32)
    y = data.integers(0, sizes[-1], 50)
    results = []
    for warm in (False, True):
        rng = np.random.default_rng(1)
        params = init_params(sizes, "relu", np.float32, rng)
        state = init_state(be, opt, params)
        if warm:
            before = [p.copy() for p in params]
            be.warm_up(params, state, X, y, 16, "relu", opt)
            assert state.step == 0 and all(
                np.array_equal(a, b) for a, b in zip(before, params, strict=True)
            )
        train(be, params, state, X, y, activation="relu", opt=opt, epochs=2, batch_size=16,
              shuffle=True, rng=rng)  # fmt: skip
        results.append([*params, *(a for v in state.slots.values() for a in v), rng.random()])
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_with_warm_up_equals_fit_without(digits, monkeypatch):
    def fit():
        model = MLPClassifier((16,), max_iter=3, random_state=0, backend="numba")
        return model.fit(digits.X_train, digits.y_train)

    warm = fit()
    monkeypatch.setattr(type(get_backend("numba")), "warm_up", lambda self, *args: None)
    cold = fit()
    assert warm.loss_curve_ == cold.loss_curve_
    for a, b in zip(warm.coefs_ + warm.intercepts_, cold.coefs_ + cold.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_compilation_is_announced_once_per_process(fresh_notice, capsys):
    with warmup.announce_compiles(False):
        _fresh_compile()
    assert capsys.readouterr().err == ""
    for _ in range(2):
        with warmup.announce_compiles():
            _fresh_compile()
            _fresh_compile()
    err = capsys.readouterr().err
    assert err == warmup.compile_notice() + "\n"
    assert "fastnn compile" in err and warmup.compile_target()["cpu"] in err


@pytest.mark.parametrize(
    ("flags", "announced"), [((), True), (("--quiet",), False), (("--json",), False)]
)
def test_train_announces_compiling_unless_quiet(
    flags, announced, fresh_notice, monkeypatch, tmp_path, capsys
):
    backend = type(get_backend("numba"))
    real = backend.warm_up

    def cold_warm_up(self, *args):
        _fresh_compile()
        real(self, *args)

    monkeypatch.setattr(backend, "warm_up", cold_warm_up)
    argv = ["train", "--backend", "numba", "--dataset", "digits", "--epochs", "1", "--hidden",
            "8", "--out", str(tmp_path / "m.npz"), *flags]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err.count(warmup.compile_notice()) == announced
    if "--json" in flags:
        result = json.loads(out)
        assert result["warm_up_seconds"] >= 0 and result["train_seconds"] > 0


def test_python_m_fastnn_is_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["fastnn", "compile", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("fastnn", run_name="__main__")
    assert exit_info.value.code == 0 and "usage: fastnn compile" in capsys.readouterr().out


def test_cold_cache_is_announced_once_and_compile_warms_it(tmp_path):
    """The one test that compiles cold, in fresh processes with their own numba cache: a run
    says once that it compiles, and trains bitwise as a later run on its cached kernels (a
    kernel compiled in memory once differed from its cached copy); ``fastnn compile`` fills
    the cache; then a run compiles nothing and says nothing."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    fastnn = str(Path(sys.executable).with_name("fastnn"))

    def run(*argv):
        proc = subprocess.run([fastnn, *argv], capture_output=True, text=True, env=env,
                              timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc

    def fit_digits(name):  # float32, fused
        return run("train", "--backend", "numba", "--dataset", "digits", "--epochs", "2",
                   "--out", str(tmp_path / f"{name}.npz"))  # fmt: skip

    cold_run = fit_digits("cold")
    notice = "fastnn: compiling numba kernels for this CPU"
    assert cold_run.stderr.count(notice) == 1 and "fastnn compile" in cold_run.stderr
    assert notice not in fit_digits("cached").stderr
    cold, cached = (load_model_file(tmp_path / f"{n}.npz")[0] for n in ("cold", "cached"))
    for a, b in zip(cold, cached, strict=True):
        np.testing.assert_array_equal(a, b)
    compiled = json.loads(run("compile", "--dtype", "float32", "--json").stdout)
    assert "step.fused_steps" in {c["kernel"] for c in compiled["compiled"]}  # read-only data
    assert compiled["numba_kernel_cache"].startswith("warm")
    info = json.loads(run("info", "--json").stdout)
    assert info["numba_kernel_cache"].startswith("warm (")  # kernel_cache_status: all warm
    # the layered path's gradient and update kernels: compiled ahead by `fastnn compile`
    warm = run("train", "--backend", "numba", "--dataset", "digits", "--epochs", "1",
               "--hidden", "8,8", "--out", str(tmp_path / "m.npz"))  # fmt: skip
    assert notice not in warm.stderr
    # a regressor's fused step (2-D targets): compiled ahead too
    fit_regressor = ("import numpy as np; from fastnn import MLPRegressor; "
                     "X = np.random.default_rng(0).random((50, 8), dtype=np.float32); "
                     "MLPRegressor(hidden_layer_sizes=(8,), max_iter=1, backend='numba', "
                     "verbose=True).fit(X, X[:, :2])")  # fmt: skip
    regressor = subprocess.run([sys.executable, "-c", fit_regressor], capture_output=True,
                               text=True, env=env, timeout=600)  # fmt: skip
    assert regressor.returncode == 0 and notice not in regressor.stderr, regressor.stderr
