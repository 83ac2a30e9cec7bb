"""Never lose a run, round two: what an adversarial user still broke. A new run never
overwrites another run's checkpoint or a saved model, every output path is checked before
training, a resumed run's file describes the whole run, a killed save leaves no temporary
behind for long, SIGTERM checkpoints like Ctrl-C, --resume compares the settings the user
typed, and a loss that explodes but stays finite is a divergence."""

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastnn import checkpoint, load_model
from fastnn.cli import CHECKPOINT_FILE, main
from fastnn.errors import TrainingDiverged
from fastnn.estimator import MLPClassifier
from fastnn.io import load_model_file
from fastnn.train import check_exploding

FASTNN = str(Path(sys.executable).with_name("fastnn"))
BASE = ["train", "--dataset", "digits", "--hidden", "8", "--quiet"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def no_training(monkeypatch):
    """Make any training fail the test: refusals must come before the work."""

    def fit(self, *args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(MLPClassifier, "fit", fit)


@pytest.fixture
def run_dir(tmp_path, capsys):
    """A 2-epoch sgd run (hidden 8, seed 3, float64, batch 32) checkpointed in tmp/ck."""
    ckpt = tmp_path / "ck"
    assert main([*BASE, "--epochs", "2", "--optimizer", "sgd", "--seed", "3", "--dtype",
                 "float64", "--batch-size", "32", "--checkpoint-dir", str(ckpt),
                 "--out", str(tmp_path / "m.npz")]) == 0  # fmt: skip
    capsys.readouterr()
    return ckpt


# 1: another run's checkpoint ------------------------------------------------------------


def test_a_new_run_refuses_a_directory_holding_another_runs_checkpoint(run_dir, tmp_path, capsys,
                                                                       no_training):  # fmt: skip
    good = (run_dir / CHECKPOINT_FILE).read_bytes()
    other = tmp_path / "other"
    (other / "ck").mkdir(parents=True)
    (other / "ck" / CHECKPOINT_FILE).write_bytes(good)
    cases = [
        [*BASE, "--hidden", "4", "--checkpoint-dir", str(run_dir)],
        [*BASE, "--checkpoint-dir", str(run_dir), "--overwrite"],  # --overwrite is for --out
        ["train", "--resume", str(other / "ck"), "--checkpoint-dir", str(run_dir)],
    ]
    for argv in cases:
        assert main([*argv, "--out", str(tmp_path / "n.npz")]) == 2
        err = _one_line(capsys)
        assert f"--checkpoint-dir {run_dir} already holds another run's" in err
        assert f"--resume {run_dir}" in err
    # Ctrl-C's own checkpoint next to --out: refused too, unless --overwrite
    (tmp_path / "n.ckpt").mkdir()
    (tmp_path / "n.ckpt" / CHECKPOINT_FILE).write_bytes(good)
    assert main([*BASE, "--out", str(tmp_path / "n.npz")]) == 2
    assert f"--resume {tmp_path / 'n.ckpt'}" in _one_line(capsys)
    assert (run_dir / CHECKPOINT_FILE).read_bytes() == good
    assert not (tmp_path / "n.npz").exists()


# 2: --out and the data checked before training -------------------------------------------


def _bad_outs(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "file.txt").write_text("not a directory")
    (tmp / "saved.npz").write_bytes(b"a model the user saved")
    os.mkfifo(tmp / "fifo.npz")
    r = np.random.default_rng(0)
    np.savez(tmp / "mismatch.npz", x_train=r.integers(0, 256, (60, 8, 8), dtype=np.uint8),
             y_train=np.arange(60) % 3, x_test=r.integers(0, 256, (20, 7, 7), dtype=np.uint8),
             y_test=np.arange(20) % 3)  # fmt: skip
    return [
        (["--out", str(tmp / "nodir" / "m.npz")], f"directory {tmp / 'nodir'} does not exist"),
        (["--out", str(tmp / "a" / "b" / "m.npz")], "does not exist"),
        (["--out", str(tmp)], f"--out {tmp} is a directory"),
        (["--out", "."], "--out . is a directory"),
        (["--out", ".."], "--out .. is a directory"),
        (["--out", ""], "--out '' is a directory"),
        (["--out", "new/"], "--out new/ is a directory"),
        (["--out", str(tmp / "file.txt" / "m.npz")], "file.txt is not a directory"),
        (["--out", "/proc/m.npz"], "cannot write in /proc"),
        (["--out", str(tmp / "saved.npz")], "already exists; pass --overwrite"),
        (["--out", str(tmp / "fifo.npz"), "--overwrite"], "not a regular file"),
        (["--dataset", str(tmp / "mismatch.npz")], "has 64 features per sample but the test"),
        (["--checkpoint-dir", str(tmp / "file.txt")], "exists and is not a directory"),
        (["--checkpoint-dir", "/proc/ck"], "cannot write in /proc"),
        (["--checkpoint-dir", str(tmp / "file.txt" / "ck")], "is not a directory"),
    ]


def test_outputs_and_data_are_checked_before_training(tmp_path, capsys, monkeypatch,
                                                      no_training):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    for extra, message in _bad_outs(tmp_path):
        argv = [*BASE, "--out", str(tmp_path / "m.npz"), *extra]
        assert main(argv) == 2, extra
        err = _one_line(capsys)
        assert message in err and ("--out" in err or "--dataset" in err or "--checkpoint" in err)
    assert (tmp_path / "saved.npz").read_bytes() == b"a model the user saved"
    assert not (tmp_path / "m.npz").exists()


def test_plot_onto_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    pytest.importorskip("matplotlib")
    (tmp_path / "f").write_text("x")
    assert main([*BASE, "--plot", str(tmp_path / "f"), "--out", str(tmp_path / "m.npz")]) == 2
    assert "--plot" in _one_line(capsys)


def test_overwrite_replaces_an_existing_model(tmp_path, capsys):
    out = tmp_path / "m.npz"
    out.write_bytes(b"old")
    assert main([*BASE, "--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert load_model(out).n_features_in_ == 64


# 3: a resumed run's file describes the whole run -----------------------------------------


def test_a_resumed_runs_model_records_the_runs_total_epochs(run_dir, tmp_path):
    out = tmp_path / "r.npz"
    assert main(["train", "--resume", str(run_dir), "--epochs", "5", "--quiet", "--out",
                 str(out)]) == 0  # fmt: skip
    meta = load_model_file(out)[1]
    assert meta["estimator_params"]["max_iter"] == 5 and len(meta["history"]) == 5
    assert load_model(out).max_iter == 5


# 4: temporaries of a killed save ---------------------------------------------------------


def test_stale_temporaries_of_a_killed_save_are_removed_on_start_and_resume(run_dir, tmp_path):
    stale = [".checkpoint.npz.k3j_9x2a.tmp", ".checkpoint.npz.abcdefgh.tmp"]
    kept = [".model.npz.abcdefgh.tmp", "notes.tmp", ".checkpoint.npz.keep"]
    for name in stale + kept:
        (run_dir / name).write_bytes(b"partial")
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--quiet", "--out",
                 str(tmp_path / "r.npz")]) == 0  # fmt: skip
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([CHECKPOINT_FILE, *kept])
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / stale[0]).write_bytes(b"partial")
    assert main([*BASE, "--epochs", "1", "--checkpoint-dir", str(fresh), "--out",
                 str(tmp_path / "f.npz")]) == 0  # fmt: skip
    assert [p.name for p in fresh.iterdir()] == [CHECKPOINT_FILE]
    assert checkpoint.remove_stale_temps(tmp_path / "none") == []


# 5: SIGTERM checkpoints like Ctrl-C ------------------------------------------------------


def test_sigterm_stops_after_the_epoch_saves_a_checkpoint_and_exits_143(tmp_path):
    ckpt, out = tmp_path / "ck", tmp_path / "m.npz"
    proc = subprocess.Popen(
        [FASTNN, *BASE, "--epochs", "100000", "--backend", "numpy", "--checkpoint-dir",
         str(ckpt), "--out", str(out)], stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (ckpt / CHECKPOINT_FILE).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and f"fastnn train --resume {ckpt}" in err
    assert not out.exists()
    done = len(load_model_file(ckpt / CHECKPOINT_FILE)[1]["history"])
    assert 1 <= done < 100000


def test_the_interrupt_flag_restores_the_previous_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    flag = checkpoint.InterruptFlag()
    with flag:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
    assert flag.raised and flag.exit_code == 143
    assert {s: signal.getsignal(s) for s in before} == before


# 6: --resume compares what the user typed ------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (["--optimizer", "adam"], "--optimizer adam differs from the resumed run's sgd"),
        (["--hidden", "128"], "--hidden 128 differs from the resumed run's 8"),
        (["--seed", "0"], "--seed 0 differs from the resumed run's 3"),
        (["--dtype", "float32"], "--dtype float32 differs from the resumed run's float64"),
        (["--batch-size", "128"], "--batch-size 128 differs from the resumed run's 32"),
        (["--lr", "0.1", "--optimizer", "momentum"], "differs from the resumed run's"),
        (["--nesterov"], "--nesterov True differs from the resumed run's False"),
        (["--dataset", "mnist"], "--dataset mnist differs from the resumed run's digits"),
        (["--epochs", "1"], "--epochs 1 is below the 2 epochs the run in"),
    ],
)
def test_resume_refuses_typed_settings_even_when_they_are_defaults(
    run_dir, typed, message, capsys, no_training
):
    assert main(["train", "--resume", str(run_dir), *typed]) == 2
    assert message in _one_line(capsys)


def test_resume_accepts_typed_settings_that_match_the_run(run_dir, tmp_path):
    argv = ["train", "--resume", str(run_dir), "--optimizer", "sgd", "--hidden", "8", "--seed",
            "3", "--lr", "0.1", "--dataset", "digits", "--epochs", "2", "--quiet", "--out",
            str(tmp_path / "r.npz")]  # fmt: skip
    assert main(argv) == 0


# 7: a loss that explodes but stays finite ------------------------------------------------


@pytest.mark.parametrize("flags", [["--lr", "1e6", "--hidden", "16"], ["--lr", "10"]])
def test_an_exploding_finite_loss_exits_1_and_keeps_the_existing_model(flags, tmp_path, capsys):
    out = tmp_path / "m.npz"
    argv = ["train", "--dataset", "digits", "--optimizer", "sgd", *flags, "--epochs", "5",
            "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    assert "training diverged in epoch 1: the loss exploded" in _one_line(capsys)
    assert not out.exists()
    out.write_bytes(b"a good model")
    assert main([*argv, "--overwrite"]) == 1
    assert out.read_bytes() == b"a good model"


def test_check_exploding_bounds():
    check_exploding([2.3, 0.5, 0.2], 10, 0.1)  # learning
    check_exploding([0.01, 0.05], 2, 0.1)  # noise on easy data: 5x, below ln 2
    check_exploding([0.05, 0.6], 2, 0.1)  # 12x but still better than guessing
    check_exploding([22.0], 10, 0.1)  # below 10 ln 10 = 23.0
    check_exploding([], 10, 0.1)
    for losses, n_classes in [([23.1], 10), ([2.3, 1.0, 23.5], 10), ([0.1, 1.1], 2),
                              ([0.5, 7.0], 2), ([465282.0], 10)]:  # fmt: skip
        with pytest.raises(TrainingDiverged, match="the loss exploded"):
            check_exploding(losses, n_classes, 0.1)


# 8: the CLI drives the estimator through public means only -------------------------------


def test_cli_and_checkpoint_set_no_private_estimator_attribute(tmp_path, monkeypatch):
    import fastnn.checkpoint
    import fastnn.cli

    ours = {fastnn.cli.__file__, fastnn.checkpoint.__file__}
    private: list[str] = []
    real = MLPClassifier.__setattr__

    def spy(self, name, value):
        if name.startswith("_") and sys._getframe(1).f_code.co_filename in ours:
            private.append(name)
        real(self, name, value)

    monkeypatch.setattr(MLPClassifier, "__setattr__", spy)
    ckpt = tmp_path / "ck"
    assert main([*BASE, "--epochs", "2", "--validation-fraction", "0.1", "--checkpoint-dir",
                 str(ckpt), "--out", str(tmp_path / "m.npz")]) == 0  # fmt: skip
    assert main(["train", "--resume", str(ckpt), "--epochs", "3", "--quiet", "--out",
                 str(tmp_path / "r.npz")]) == 0  # fmt: skip
    assert private == []
    for module in ours:  # nor written in the source: no `x._name = ...` but on self
        for node in ast.walk(ast.parse(Path(module).read_text())):
            for target in getattr(node, "targets", [getattr(node, "target", None)]):
                if isinstance(target, ast.Attribute) and target.attr.startswith("_"):
                    assert isinstance(target.value, ast.Name) and target.value.id == "self"


def test_the_network_must_fit_in_memory_before_training(tmp_path, capsys, monkeypatch):
    import fastnn.cli

    monkeypatch.setattr(fastnn.cli, "available_memory", lambda: 1000)
    code = fastnn.cli.main(["train", "--dataset", "digits", "--hidden", "64",
                            "--out", str(tmp_path / "m.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--hidden 64: a network of" in err
    assert not (tmp_path / "m.npz").exists()


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    import fastnn.cli

    def exhausted(args):
        raise MemoryError

    monkeypatch.setattr(fastnn.cli, "_run_command", exhausted)
    assert fastnn.cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastnn: error: out of memory") and err.count("\n") == 1


def test_ctrl_c_while_the_command_line_imports_is_one_line(tmp_path):
    """The console script's entry (fastnn.__main__.main) catches a Ctrl-C that lands while
    scikit-learn and the rest import, before the command line's own handling exists."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'fastnn.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from fastnn.__main__ import main\n"
        "sys.exit(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 130 and result.stderr == "fastnn: interrupted\n"


# what a review of the above found -----------------------------------------------------------
def _train(tmp_path, *flags):
    return main(["train", "--dataset", "digits", "--hidden", "16", "--epochs", "3", "--quiet",
                 "--out", str(tmp_path / "m.npz"), *flags])  # fmt: skip


@pytest.mark.parametrize("decay", ["1", "5", "10"])
def test_weight_decay_is_not_taken_for_an_exploding_loss(tmp_path, decay):
    """The reported loss includes --weight-decay's penalty, which can be large at first: only
    the cross-entropy is judged."""
    assert _train(tmp_path, "--weight-decay", decay) == 0


def test_a_signal_during_the_final_save_lets_it_finish(tmp_path, monkeypatch, capsys):
    from fastnn.estimator import BaseMLP

    save = BaseMLP.save

    def interrupted_save(self, path, **kwargs):
        if Path(path).name == "m.npz":
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets its flag
        return save(self, path, **kwargs)

    monkeypatch.setattr(BaseMLP, "save", interrupted_save)
    assert _train(tmp_path) == 143
    assert "the model is saved in" in capsys.readouterr().err
    assert load_model(tmp_path / "m.npz").n_iter_ >= 1


def test_a_file_where_ctrl_cs_checkpoint_would_go_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "m.ckpt").write_text("notes")
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err
    assert "m.ckpt: exists and is not a directory" in err and err.count("\n") == 1
    assert (tmp_path / "m.ckpt").read_text() == "notes"


@pytest.mark.parametrize("name", ["checkpoint.npz", "m.ckpt"])
def test_out_may_not_take_a_checkpoints_name(tmp_path, capsys, name):
    args = ["train", "--dataset", "digits", "--out", str(tmp_path / name), "--overwrite"]
    assert main(args) == 2
    assert "are the names of checkpoints" in capsys.readouterr().err


def test_a_run_on_a_relative_data_path_resumes_from_another_directory(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "d.npz", x_train=X[:300].astype(np.uint8), y_train=y[:300],
             x_test=X[300:400].astype(np.uint8), y_test=y[300:400])  # fmt: skip
    monkeypatch.chdir(tmp_path)
    first = ["train", "--dataset", "d.npz", "--hidden", "8", "--epochs", "2", "--quiet",
             "--checkpoint-dir", "run", "--out", "a.npz"]  # fmt: skip
    assert main(first) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "--resume", "../run", "--epochs", "3", "--quiet", "--out", "b.npz"]) == 0
    again = ["train", "--resume", "../run", "--dataset", "../d.npz", "--epochs", "4", "--quiet",
             "--out", "c.npz"]  # fmt: skip
    assert main(again) == 0  # the same file, named from here


def test_the_continue_line_keeps_the_out_path():
    line = checkpoint.interrupted_message(3, 10, "m.ckpt", "m.npz")
    assert line.endswith("continue with: fastnn train --resume m.ckpt --out m.npz")


def test_model_commands_refuse_regressors_and_multi_label_models(tmp_path, capsys):
    from fastnn import MLPRegressor

    X = np.random.default_rng(0).random((40, 64))
    MLPRegressor(hidden_layer_sizes=(4,), max_iter=2).fit(X, X[:, 0]).save(tmp_path / "r.npz")
    labels = np.stack([X[:, 0] > 0.5, X[:, 1] > 0.5], axis=1).astype(int)
    MLPClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(X, labels).save(tmp_path / "l.npz")
    np.save(tmp_path / "x.npy", X[:3])
    for model, what in (("r.npz", "an MLPRegressor"), ("l.npz", "a multi-label MLPClassifier")):
        for argv in (["predict", str(tmp_path / model), str(tmp_path / "x.npy")],
                     ["evaluate", str(tmp_path / model), "--dataset", "digits"]):  # fmt: skip
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"is {what}; the command line" in err
