"""The ``fastnn`` command line end to end: train, evaluate, predict, info, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn import load_model
from fastnn.cli import main
from fastnn.data import load


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The acceptance command, run twice: 30 epochs on digits with the numpy backend."""
    results = []
    for name in ("a.npz", "b.npz"):
        out = tmp_path_factory.mktemp("run") / name
        code = main(
            [
                "train",
                "--backend",
                "numpy",
                "--dataset",
                "digits",
                "--epochs",
                "30",
                "--json",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        assert code == 0
        results.append(out)
    return results


def test_train_reaches_95_percent_and_is_reproducible(trained, capsys):
    code, out, _ = run(
        capsys,
        "train",
        "--backend",
        "numpy",
        "--dataset",
        "digits",
        "--epochs",
        "30",
        "--json",
        "--quiet",
        "--out",
        str(trained[0]),
        "--overwrite",  # the same file again: a third identical run
    )
    result = json.loads(out)
    assert code == 0 and result["test_accuracy"] >= 0.95
    assert {
        "backend",
        "dataset",
        "test_accuracy",
        "train_seconds",
        "samples_per_second",
        "history",
    } <= set(result)
    assert result["backend"] == "numpy" and len(result["history"]) == 30
    assert {"loss", "accuracy", "seconds"} <= set(result["history"][0])
    a, b = np.load(trained[0]), np.load(trained[1])
    assert a.files == b.files
    for key in a.files:
        if key.startswith("param_"):
            np.testing.assert_array_equal(a[key], b[key])


def test_train_prints_a_summary(tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        str(tmp_path / "m.npz"),
    )
    assert code == 0 and out.startswith("test accuracy 0.") and "samples/s" in out
    assert (tmp_path / "m.npz").is_file()


def test_no_flags_train_the_default_recipe(tmp_path, capsys):
    """Without flags, train runs the measured recipe (README's "Recipes"): 512 relu units,
    dropout 0.3, Adam at 0.001 decayed by a cosine over 40 epochs of batch 128."""
    out = tmp_path / "m.npz"
    code, text, _ = run(capsys, "train", "--dataset", "digits", "--json", "--quiet",
                        "--out", str(out))  # fmt: skip
    result = json.loads(text)
    assert code == 0 and result["layer_sizes"] == [64, 512, 10]
    assert (result["dropout"], result["schedule"], result["epochs"]) == (0.3, "cosine", 40)
    assert (result["optimizer"], result["learning_rate"], result["batch_size"]) == (
        "adam",
        1e-3,
        128,
    )
    assert len(result["history"]) == 40 and result["test_accuracy"] > 0.95
    model = load_model(out)
    assert (model.dropout, model.lr_schedule, model.hidden_layer_sizes) == (0.3, "cosine", (512,))


def test_seed_network_is_one_line(tmp_path, capsys):
    """The notebooks' network: one 10-unit relu layer, full-batch gradient descent, lr 0.1."""
    code, out, _ = run(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--hidden",
        "10",
        "--batch-size",
        "full",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--epochs",
        "500",
        "--dropout",
        "0",
        "--schedule",
        "constant",
        "--json",
        "--quiet",
        "--out",
        str(tmp_path / "seed.npz"),
    )
    result = json.loads(out)
    assert code == 0 and result["layer_sizes"] == [64, 10, 10]
    assert result["batch_size"] == "full" and result["learning_rate"] == 0.1
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    assert result["test_accuracy"] > 0.85


def test_evaluate_reports_accuracy_and_confusion(trained, capsys):
    code, out, _ = run(capsys, "evaluate", str(trained[0]), "--json")
    result = json.loads(out)
    assert code == 0 and result["dataset"] == "digits"  # remembered from training
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == result["n_samples"] == len(load("digits").y_test)
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    code, out, _ = run(capsys, "evaluate", str(trained[0]))
    assert code == 0 and out.startswith("accuracy 0.9")


def test_predict_npy_and_json(trained, tmp_path, capsys):
    d = load("digits")
    np.save(tmp_path / "x.npy", d.X_test[:6])
    code, out, _ = run(capsys, "predict", str(trained[0]), str(tmp_path / "x.npy"), "--json")
    result = json.loads(out)
    assert code == 0 and len(result["predictions"]) == 6
    assert np.mean(np.array(result["predictions"]) == d.y_test[:6]) >= 0.5
    code, out, _ = run(capsys, "predict", str(trained[0]), str(tmp_path / "x.npy"))
    assert out.split() == [str(p) for p in result["predictions"]]


def test_info(capsys):
    code, out, _ = run(capsys, "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["backends"]["numpy"] == "available"
    assert {"fastnn", "numpy", "numba", "auto_backend", "blas", "cuda"} <= set(info)


def test_info_names_the_compile_target_and_kernel_paths(capsys):
    pytest.importorskip("numba")
    from fastnn.kernels import target

    from fastnn.backends.numba import kernel_path

    code, out, _ = run(capsys, "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["compile_target"] == {
        "cpu": target.cpu_name(),
        "isa": target.isa(),
        "vector_bytes": target.VECTOR_BYTES,
        "vector_registers": target.VECTOR_REGISTERS,
    }
    paths = info["kernel_paths"]
    assert {"784-10-10", "784-100-10", "784-256-128-10", "64-100-10"} <= set(paths)
    for shape, path in paths.items():
        assert path == kernel_path(tuple(int(n) for n in shape.split("-")))
    code, out, _ = run(capsys, "info")
    assert f"  cpu: {target.cpu_name()}" in out and "  784-100-10: " in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
        (["train", "--lr", "-1"], "--lr: expected a positive number"),
        (["train", "--hidden", "128,x"], "--hidden: expected a positive integer, got 'x'"),
        (["train", "--batch-size", "big"], "--batch-size: expected a positive integer"),
        (["train", "--backend", "tpu"], "--backend: invalid choice: 'tpu'"),
        (["train", "--activation", "gelu"], "--activation: invalid choice"),
        (["train", "--dataset", "/no/such/dir"], "neither a known name"),
        (["evaluate", "missing.npz"], "missing.npz: no such model file"),
        (["predict"], "the following arguments are required: model, input"),
        (["compile", "--dtype", "float16"], "--dtype: invalid choice: 'float16'"),
        ([], "the following arguments are required: command"),
        # issue 16: flags whose bad values used to reach numpy or scikit-learn
        (["train", "--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got '-1'"),
        (["train", "--seed", str(2**32)], "--seed: expected an integer in [0, 4294967295]"),
        (["train", "--seed", "1.5"], "--seed: expected an integer in [0, 4294967295]"),
        (["train", "--weight-decay", "1e307"], "--weight-decay: expected a number in [0, 10]"),
        (["train", "--weight-decay", "11"], "--weight-decay: expected a number in [0, 10]"),
        (["train", "--momentum", "5"], "--momentum: expected a number in [0, 1], got '5'"),
        (["train", "--momentum", "1.01"], "--momentum: expected a number in [0, 1]"),
        # issue 16: network sizes refused before anything is allocated
        (["train", "--hidden", "1000000000"], "--hidden: 1000000000 units in a layer exceed"),
        (["train", "--hidden", "64,65537"], "--hidden: 65537 units in a layer exceed"),
        (["train", "--hidden", "10000,10000"], "--hidden: 100000000 weights between hidden"),
        (["train", "--hidden", ",".join(["2"] * 65)], "--hidden: 65 hidden layers exceed"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_model_and_data_size_mismatch(trained, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 784), dtype=np.uint8))
    code, _, err = run(capsys, "predict", str(trained[0]), str(tmp_path / "x.npy"))
    assert code == 2 and "has 784 features per sample but the model expects 64" in err
    assert err.startswith("fastnn: error: ")


def test_console_script_fails_cleanly_in_a_real_process(tmp_path):
    script = Path(sys.executable).with_name("fastnn")
    proc = subprocess.run(
        [str(script), "train", "--dataset", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("fastnn: error: dataset") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
