"""Never lose a run: checkpoints after every epoch, exact resume after SIGKILL or Ctrl-C,
and training that stops with the last finite parameters when the loss diverges."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastnn import MLPClassifier, load_model
from fastnn.cli import CHECKPOINT_FILE, main
from fastnn.errors import TrainingDiverged
from fastnn.io import load_model_file, save_model_file

FASTNN = str(Path(sys.executable).with_name("fastnn"))
CPU_BACKENDS = ["numpy", "numba"]
N_SLOW = 20000


@pytest.fixture(scope="module")
def slow_dataset(tmp_path_factory):
    """An MNIST-shaped .npz big enough that an epoch takes a while (a kill lands inside one)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, size=N_SLOW + 1000)
    prototypes = rng.integers(0, 256, size=(10, 28, 28))
    noise = rng.integers(0, 256, size=(len(y), 28, 28))
    x = (0.7 * noise + 0.3 * prototypes[y]).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "slow.npz"
    np.savez(path, x_train=x[:N_SLOW], y_train=y[:N_SLOW], x_test=x[N_SLOW:], y_test=y[N_SLOW:])
    return path


def _train_args(dataset, backend, out, epochs=8):
    return ["train", "--dataset", str(dataset), "--backend", backend, "--dtype", "float64",
            "--hidden", "32", "--batch-size", "32", "--optimizer", "momentum", "--lr", "0.01",
            "--epochs", str(epochs), "--seed", "3", "--quiet", "--out", str(out)]  # fmt: skip


def _params(path):
    return load_model_file(path)[0]


def _wait_for_epochs(path: Path, epochs: int, proc: subprocess.Popen, timeout: float = 120):
    """Wait until the checkpoint at ``path`` holds at least ``epochs`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.is_file():
            try:
                if len(load_model_file(path)[1]["history"]) >= epochs:
                    return
            except Exception:  # caught between rename and read: the next read sees it
                pass
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint with {epochs} epochs in {timeout} s")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sigkill_mid_epoch_then_resume_is_bit_identical(backend, slow_dataset, tmp_path):
    assert main(_train_args(slow_dataset, backend, tmp_path / "straight.npz")) == 0
    ckpt = tmp_path / "ckpt"
    argv = [FASTNN, *_train_args(slow_dataset, backend, tmp_path / "killed.npz")]
    proc = subprocess.Popen([*argv, "--checkpoint-dir", str(ckpt)], stderr=subprocess.PIPE)
    _wait_for_epochs(ckpt / CHECKPOINT_FILE, 2, proc)
    epoch_seconds = load_model_file(ckpt / CHECKPOINT_FILE)[1]["history"][-1]["seconds"]
    time.sleep(epoch_seconds / 2)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "killed.npz").exists()
    done = len(load_model_file(ckpt / CHECKPOINT_FILE)[1]["history"])
    assert 2 <= done < 8  # killed with epochs left to do
    resumed = subprocess.run(
        [FASTNN, "train", "--resume", str(ckpt), "--quiet", "--out", str(tmp_path / "r.npz")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    for a, b in zip(_params(tmp_path / "straight.npz"), _params(tmp_path / "r.npz"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(load_model_file(tmp_path / "r.npz")[1]["history"]) == 8


def test_ctrl_c_saves_a_checkpoint_and_exits_130(slow_dataset, tmp_path):
    straight = tmp_path / "straight.npz"
    assert main(_train_args(slow_dataset, "numba", straight)) == 0
    ckpt = tmp_path / "ck"
    argv = [FASTNN, *_train_args(slow_dataset, "numba", tmp_path / "m.npz")]
    proc = subprocess.Popen([*argv, "--checkpoint-dir", str(ckpt)], stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    _wait_for_epochs(ckpt / CHECKPOINT_FILE, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"checkpoint saved in {ckpt}" in err and "Traceback" not in err
    assert f"fastnn train --resume {ckpt}" in err and not (tmp_path / "m.npz").exists()
    assert main(["train", "--resume", str(ckpt), "--quiet", "--out", str(tmp_path / "r.npz")]) == 0
    for a, b in zip(_params(straight), _params(tmp_path / "r.npz"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_without_checkpoint_dir_saves_next_to_the_model(tmp_path, capsys, monkeypatch):
    from fastnn import checkpoint

    real = checkpoint.InterruptFlag.__enter__

    def enter_and_interrupt(self):  # Ctrl-C as training starts
        real(self)
        os.kill(os.getpid(), signal.SIGINT)
        return self

    monkeypatch.setattr(checkpoint.InterruptFlag, "__enter__", enter_and_interrupt)
    out = tmp_path / "m.npz"
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--epochs", "5", "--quiet",
                 "--out", str(out)]) == 130  # fmt: skip
    err = capsys.readouterr().err
    assert "stopping after this epoch" in err and "interrupted after epoch 1 of 5" in err
    assert len(load_model_file(tmp_path / "m.ckpt" / CHECKPOINT_FILE)[1]["history"]) == 1


def test_checkpoint_every_epoch_and_a_failed_write_keeps_the_last_good_one(
    tmp_path, monkeypatch, capsys
):
    ckpt = tmp_path / "ck"
    args = ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "3", "--quiet",
            "--checkpoint-dir", str(ckpt), "--out", str(tmp_path / "m.npz")]  # fmt: skip
    assert main(args) == 0
    good = (ckpt / CHECKPOINT_FILE).read_bytes()
    assert len(load_model_file(ckpt / CHECKPOINT_FILE)[1]["history"]) == 3

    def crash(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    # same settings: fine
    assert main([*args, "--epochs", "4", "--resume", str(ckpt), "--overwrite"]) == 2
    assert "disk full" in capsys.readouterr().err
    assert (ckpt / CHECKPOINT_FILE).read_bytes() == good
    assert [p.name for p in ckpt.iterdir()] == [CHECKPOINT_FILE]  # no temporary left behind


def test_resume_refuses_other_settings_and_model_files(tmp_path, capsys):
    ckpt = tmp_path / "ck"
    base = ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--quiet"]
    assert main([*base, "--checkpoint-dir", str(ckpt), "--out", str(tmp_path / "m.npz")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the resumed run's 0.001" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    (tmp_path / "m.npz").rename(tmp_path / "plain" / CHECKPOINT_FILE)
    assert main(["train", "--resume", str(tmp_path / "plain")]) == 2
    assert "a model file, not a training checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_estimator_continues_from_a_saved_training_state(backend, solver, digits, tmp_path):
    kw = dict(hidden_layer_sizes=(16,), solver=solver, backend=backend, dtype="float64",
              learning_rate_init=0.01, random_state=2, n_iter_no_change=99)  # fmt: skip
    straight = MLPClassifier(max_iter=6, **kw).fit(digits.X_train, digits.y_train)
    first = MLPClassifier(max_iter=3, **kw).fit(digits.X_train, digits.y_train)
    first.save(tmp_path / "state.npz", training_state=True)
    warm = load_model(tmp_path / "state.npz", backend=backend)
    warm.set_params(warm_start=True, max_iter=3).fit(digits.X_train, digits.y_train)
    partial = load_model(tmp_path / "state.npz", backend=backend)
    for _ in range(3):
        partial.partial_fit(digits.X_train, digits.y_train)
    for model in (warm, partial):
        for a, b in zip(straight.coefs_ + straight.intercepts_,
                        model.coefs_ + model.intercepts_, strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)
        assert model.loss_curve_ == straight.loss_curve_


def test_a_training_state_with_pytorchs_velocity_continues_as_scikit_learns(digits, tmp_path):
    # files saved before the momentum followed scikit-learn hold PyTorch's velocity, without
    # the learning rate in it; loading converts it for the next step
    kw = dict(hidden_layer_sizes=(16,), solver="sgd", momentum=0.9, dtype="float64",
              learning_rate_init=0.01, random_state=2, n_iter_no_change=99)  # fmt: skip
    first = MLPClassifier(max_iter=3, **kw).fit(digits.X_train, digits.y_train)
    first.save(tmp_path / "new.npz", training_state=True)
    params, meta, extra = load_model_file(tmp_path / "new.npz")
    del meta["training_state"]["velocity"]
    lr = meta["training_state"]["learning_rate"]
    old = {k: (-v / lr if k.startswith("slot_velocity") else v) for k, v in extra.items()}
    save_model_file(tmp_path / "old.npz", params, meta, old)
    models = [load_model(tmp_path / f"{name}.npz") for name in ("new", "old")]
    for model in models:
        model.set_params(warm_start=True, max_iter=2).fit(digits.X_train, digits.y_train)
    for a, b in zip(models[0].coefs_, models[1].coefs_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_divergence_stops_with_the_last_finite_parameters(backend, digits):
    model = MLPClassifier((32,), solver="sgd", learning_rate_init=1e4, momentum=0.9,
                          backend=backend, random_state=0, max_iter=50)  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, batch \d+ of \d+.*lower the lea"):
        model.fit(digits.X_train * 1e3, digits.y_train)
    assert all(np.isfinite(p).all() for p in model.coefs_ + model.intercepts_)
    assert np.isfinite(model.predict_proba(digits.X_test)).all()


def test_cli_divergence_exits_1_with_one_line_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "m.npz"
    code = main(["train", "--dataset", "digits", "--optimizer", "sgd", "--lr", "1e9",
                 "--epochs", "20", "--quiet", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "training diverged in epoch" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_memory_stays_flat_over_200_epochs(digits):
    import tracemalloc

    used = []

    def record(model, stats):
        used.append(tracemalloc.get_traced_memory()[0])
        return False

    model = MLPClassifier((32,), max_iter=200, n_iter_no_change=200, backend="numba")
    tracemalloc.start()
    try:
        model.fit(digits.X_train, digits.y_train, on_epoch_end=record)
    finally:
        tracemalloc.stop()
    assert len(used) == 200
    assert used[-1] - used[0] < 2 * 2**20, f"grew {(used[-1] - used[0]) / 2**20:.1f} MiB"
