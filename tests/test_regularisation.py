"""Dropout, learning-rate schedules and restore-best: the maths (fastnn.dropout,
fastnn.schedule, the reference backend), the estimators' parameters, exact resume, and the
CLI's --dropout, --schedule, --warmup, --validation-fraction and --patience. Backend
equivalence of both is in test_backend_equivalence.py."""

import json
import math
import os
import signal
import warnings

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from fastnn import MLPClassifier, MLPRegressor, load_model
from fastnn.backends import get_backend
from fastnn.cli import main
from fastnn.data import load
from fastnn.dropout import keep_mask, layer_key, mix32, mix32_array, threshold
from fastnn.io import load_model_file, save_model_file
from fastnn.model import init_params
from fastnn.optim import Optimizer, init_state
from fastnn.schedule import Schedule

CPU_BACKENDS = ["numpy", "numba"]


# ---- schedules ----------------------------------------------------------------------------
def test_constant_schedule_with_warm_up_rises_linearly_then_holds():
    s = Schedule("constant", 10, warmup_steps=4)
    assert [s.factor(t) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_falls_from_one_after_warm_up_to_near_zero_and_stays():
    s = Schedule("cosine", 102, warmup_steps=2)
    factors = [s.factor(t) for t in range(102)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert factors[52] == pytest.approx(0.5)  # half-way through the 100 decaying steps
    assert all(a > b for a, b in zip(factors[2:], factors[3:], strict=False))
    assert 0 < factors[-1] < 1e-3
    assert s.factor(500) == factors[-1]  # past the end: the last rate


@pytest.mark.parametrize(("total", "rise"), [(1000, 0), (7, 0), (50, 10)])
def test_onecycle_is_pytorchs_one_cycle(total, rise):
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.05)
    pct = rise / total if rise else 0.3
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.05, total_steps=total, pct_start=pct, anneal_strategy="cos",
        cycle_momentum=False,
    )  # fmt: skip
    s = Schedule("onecycle", total, rise)
    for t in range(total):
        assert 0.05 * s.factor(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=0)
        opt.step()
        ref.step()


def test_every_update_uses_the_schedules_rate():
    # plain SGD on a gradient of 1: each update moves the parameter by exactly its rate
    opt = Optimizer("sgd", 0.1, schedule=Schedule("cosine", 5, warmup_steps=1))
    backend = get_backend("numpy")
    params = [np.zeros(1), np.zeros(1)]
    state = init_state(backend, opt, params)
    moves = []
    for _ in range(5):
        params[0][0] = 0.0
        backend.apply_update(params, [np.ones(1), np.zeros(1)], state, opt)
        moves.append(-float(params[0][0]))
    assert moves == [opt.rate(t) for t in range(5)]
    assert moves[0] == 0.1 and moves[1] == 0.1 and moves[2] < 0.1


def test_a_schedule_starting_later_is_the_same_schedule_shifted():
    s, later = Schedule("onecycle", 20, 3), Schedule("onecycle", 20, 3, start_step=7)
    assert [later.factor(t + 7) for t in range(25)] == [s.factor(t) for t in range(25)]
    assert later.factor(0) == s.factor(0)  # before its start: its first rate


# ---- dropout masks ------------------------------------------------------------------------
def test_mix32_on_arrays_is_the_scalar_hash():
    x = np.random.default_rng(0).integers(0, 2**32, size=1000, dtype=np.uint64)
    x = np.concatenate([x, [0, 1, 2**31, 2**32 - 1]]).astype(np.uint32)
    assert mix32_array(x).tolist() == [mix32(int(v)) for v in x]


def test_mask_is_a_function_of_seed_step_layer_row_and_unit():
    mask = keep_mask(np, 5, 17, 1, (300, 200), 0.25, np.float64)
    key = layer_key(5, 17, 1)
    for row, unit in [(0, 0), (3, 199), (299, 7), (123, 45)]:
        kept = mix32(mix32(key ^ row) ^ unit) >= threshold(0.25)
        assert mask[row, unit] == (1 / 0.75 if kept else 0.0)
    # the same arguments draw the same mask; any other seed, step or layer another one
    assert np.array_equal(mask, keep_mask(np, 5, 17, 1, (300, 200), 0.25, np.float64))
    for other in [(6, 17, 1), (5, 18, 1), (5, 17, 0)]:
        assert (mask != keep_mask(np, *other, (300, 200), 0.25, np.float64)).mean() > 0.3
    # a smaller batch's rows are the first rows of a larger one's
    assert np.array_equal(mask[:7, :5], keep_mask(np, 5, 17, 1, (7, 5), 0.25, np.float64))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_drops_the_rate_and_scales_the_rest(rate, dtype):
    mask = keep_mask(np, 0, 0, 0, (500, 400), rate, dtype)
    assert mask.dtype == dtype
    assert set(np.unique(mask).tolist()) == {0.0, float(dtype(1 / (1 - rate)))}
    dropped = (mask == 0).mean()
    assert abs(dropped - rate) < 4 * math.sqrt(rate * (1 - rate) / mask.size)
    # units and rows are not correlated: neighbouring units and rows agree as chance does
    kept = mask != 0
    agree = (1 - rate) ** 2 + rate**2
    for a, b in [(kept[:, 1:], kept[:, :-1]), (kept[1:], kept[:-1])]:
        assert abs((a == b).mean() - agree) < 0.01


def test_reference_gradients_with_dropout_match_finite_differences():
    backend = get_backend("numpy")
    rng = np.random.default_rng(0)
    params = init_params((7, 6, 5, 3), "tanh", np.float64, np.random.RandomState(0))
    x, y = rng.normal(size=(9, 7)), rng.integers(0, 3, size=9)
    drop = {"dropout": 0.4, "seed": 11, "step": 3}
    _, _, grads = backend.loss_and_grads(params, x, y, "tanh", **drop)
    for p, g in zip(params, grads, strict=True):
        for index in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            old = p[index]
            p[index] = old + 1e-6
            up = backend.loss_and_grads(params, x, y, "tanh", **drop)[0]
            p[index] = old - 1e-6
            down = backend.loss_and_grads(params, x, y, "tanh", **drop)[0]
            p[index] = old
            assert g[index] == pytest.approx((up - down) / 2e-6, rel=1e-6, abs=1e-9)


def test_dropout_changes_training_not_predictions(digits):
    kw = dict(hidden_layer_sizes=(32,), max_iter=2, random_state=0, backend="numpy")
    model = MLPClassifier(dropout=0.5, **kw).fit(digits.X_train, digits.y_train)
    plain = MLPClassifier(**kw).fit(digits.X_train, digits.y_train)
    assert not np.allclose(model.coefs_[0], plain.coefs_[0])
    backend = get_backend("numpy")
    logits = backend.forward(model._params_arrays(), digits.X_test.astype(np.float32), "relu")
    np.testing.assert_allclose(model.predict_proba(digits.X_test), backend.softmax(logits),
                               rtol=1e-6)  # fmt: skip


# ---- the estimators -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"dropout": 1.0}, "dropout=1.0 is out of range; expected a number in [0, 1)"),
        ({"dropout": -0.1}, "dropout=-0.1 is out of range"),
        ({"lr_schedule": "linear"}, "lr_schedule='linear' is not supported; choose one of "
                                    "constant, cosine, onecycle"),
        ({"warmup_epochs": -1}, "warmup_epochs=-1 is out of range"),
        ({"schedule_epochs": 0}, "schedule_epochs=0 is invalid; expected None or a positive"),
        ({"solver": "lbfgs", "dropout": 0.2}, "apply to solver='sgd' or 'adam', not 'lbfgs'"),
        ({"solver": "lbfgs", "lr_schedule": "cosine"}, "apply to solver='sgd' or 'adam'"),
        ({"solver": "sgd", "learning_rate": "invscaling", "lr_schedule": "cosine"},
         "replaces learning_rate='invscaling'; set learning_rate='constant'"),
        ({"warmup_epochs": 1.5}, "warmup_epochs=1.5 is longer than the schedule's 1 epochs"),
        ({"warmup_epochs": 1e308}, "warmup_epochs=1e+308 is longer than the schedule's"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_bad_parameters_are_refused_in_one_line(estimator, params, words, digits):
    with pytest.raises(ValueError, match=None) as info:
        estimator(max_iter=1, **params).fit(digits.X_train[:50], digits.y_train[:50])
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_fit_with_dropout_and_a_schedule_resumes_bit_identically(backend, schedule, digits,
                                                                   tmp_path):  # fmt: skip
    kw = dict(hidden_layer_sizes=(24,), backend=backend, dtype="float64", random_state=4,
              dropout=0.3, lr_schedule=schedule, warmup_epochs=1, schedule_epochs=6,
              learning_rate_init=0.01, n_iter_no_change=99)  # fmt: skip
    straight = MLPClassifier(max_iter=6, **kw).fit(digits.X_train, digits.y_train)
    first = MLPClassifier(max_iter=2, **kw).fit(digits.X_train, digits.y_train)
    first.save(tmp_path / "state.npz", training_state=True)
    resumed = load_model(tmp_path / "state.npz", backend=backend)
    resumed.set_params(warm_start=True, max_iter=4).fit(digits.X_train, digits.y_train)
    for a, b in zip(straight._params_arrays(), resumed._params_arrays(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.loss_curve_ == straight.loss_curve_
    # the seed is the model's: another random_state draws other masks
    other = MLPClassifier(max_iter=2, **{**kw, "random_state": 5, "backend": "numpy"})
    assert other.fit(digits.X_train, digits.y_train)._dropout_seed != first._dropout_seed


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_warm_start_fit_is_a_new_run_with_its_own_schedule(schedule, digits):
    """Each fit is a run of max_iter epochs (scikit-learn's warm start): a second fit's
    schedule starts anew, it does not stay at the end of the first's."""
    kw = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0, backend="numpy",
              lr_schedule=schedule, n_iter_no_change=99, dtype="float64")  # fmt: skip
    model = MLPClassifier(**kw).fit(digits.X_train, digits.y_train)
    before = [w.copy() for w in model.coefs_]
    model.set_params(warm_start=True).fit(digits.X_train, digits.y_train)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(model.coefs_, before, strict=True))
    assert moved > 0.01  # not frozen at the first schedule's last, tiny rate
    assert model.loss_curve_[-1] < model.loss_curve_[4] - 0.05


def test_partial_fit_calls_share_the_first_calls_schedule(digits):
    """The schedule spans max_iter epochs of the first call's minibatches, whatever later
    calls hold; after its end, partial_fit says so."""
    X, y = digits.X_train[:1000], digits.y_train[:1000]
    model = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, batch_size=200, backend="numpy",
                          lr_schedule="cosine", random_state=0)  # fmt: skip
    model.partial_fit(X, y, classes=np.unique(digits.y_train))  # 5 of 10 updates
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):  # a smaller call does not shorten the schedule: updates 6 to 10
            model.partial_fit(X[:200], y[:200])
    with pytest.warns(UserWarning, match="cosine learning-rate schedule ended 0 updates ago"):
        model.partial_fit(X[:200], y[:200])


def test_early_stopping_holds_out_validation_data_and_keeps_its_best_epoch(digits):
    X, y = digits.X_train, digits.y_train
    X_val, y_val = digits.X_test[:200], digits.y_test[:200]
    kw = dict(hidden_layer_sizes=(16,), max_iter=12, random_state=0, backend="numpy",
              learning_rate_init=0.05, n_iter_no_change=99)  # fmt: skip
    model = MLPClassifier(early_stopping=True, **kw).fit(X, y, validation_data=(X_val, y_val))
    assert model.t_ == 12 * len(X)  # every training row trained: no split of X
    scores = model.validation_scores_
    assert len(scores) == 12 and model.best_validation_score_ == max(scores)
    assert model.score(X_val, y_val) == max(scores)  # the best epoch's weights
    # the same run cut at its best epoch ends with the same weights
    best = int(np.argmax(scores)) + 1
    cut = MLPClassifier(early_stopping=True, **{**kw, "max_iter": best})
    cut.fit(X, y, validation_data=(X_val, y_val))
    np.testing.assert_array_equal(cut.coefs_[0], model.coefs_[0])


# ---- the command line ---------------------------------------------------------------------
def _train(tmp_path, *extra, out="m.npz"):
    base = ["train", "--dataset", "digits", "--backend", "numpy", "--hidden", "16", "--seed",
            "1", "--quiet", "--json", "--out", str(tmp_path / out), "--overwrite"]  # fmt: skip
    return [*base, *extra]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--patience", "3"], "--patience needs --validation-fraction F"),
        (["--dropout", "1"], "argument --dropout: expected a number in [0, 1), got '1'"),
        (["--schedule", "step"], "argument --schedule: invalid choice: 'step'"),
        (["--warmup", "-1"], "argument --warmup: expected a number >= 0, got '-1'"),
        (["--warmup", "5", "--epochs", "4"], "--warmup 5 is longer than the run's 4 epochs"),
        (["--warmup", "1e308", "--epochs", "3"], "--warmup 1e+308 is longer than the run's 3"),
        (["--patience", "0", "--validation-fraction", "0.1"],
         "argument --patience: expected a positive integer, got '0'"),
    ],
)  # fmt: skip
def test_cli_refuses_bad_regularisation_flags_in_one_line(args, words, tmp_path, capsys):
    assert main(_train(tmp_path, *args)) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not (tmp_path / "m.npz").exists()


def test_cli_keeps_the_best_validation_epoch_and_stops_on_patience(tmp_path, capsys):
    args = ["--epochs", "60", "--validation-fraction", "0.2", "--patience", "2", "--lr", "0.05",
            "--dropout", "0.1", "--schedule", "cosine", "--warmup", "1"]  # fmt: skip
    assert main(_train(tmp_path, *args)) == 0
    result = json.loads(capsys.readouterr().out)
    val = [h["val_accuracy"] for h in result["history"]]
    assert result["stopped_early"] and result["epochs"] == len(val) < 60
    assert result["kept_epoch"] == int(np.argmax(val)) + 1 == len(val) - 2
    assert result["validation_accuracy"] == max(val)
    # the saved model is the kept epoch's: it scores that accuracy on the same split
    data = load("digits", seed=1)
    _, X_val, _, y_val = train_test_split(data.X_train, data.y_train, test_size=0.2,
                                          stratify=data.y_train, random_state=1)  # fmt: skip
    model = load_model(tmp_path / "m.npz")
    assert model.score(X_val, y_val) == pytest.approx(result["validation_accuracy"], abs=1e-12)


def test_cli_divergence_after_a_best_epoch_is_an_error(tmp_path, capsys, monkeypatch):
    """With --validation-fraction the estimator keeps its best epoch when training diverges
    (as scikit-learn's); the CLI still reports the divergence: exit 1, no model file."""
    from fastnn import estimator
    from fastnn.errors import TrainingDiverged

    epochs, real_train = [], estimator.train

    def diverging_third_epoch(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == 3:
            raise TrainingDiverged("training diverged at epoch 3, batch 2: lower --lr")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(estimator, "train", diverging_third_epoch)
    assert main(_train(tmp_path, "--epochs", "5", "--validation-fraction", "0.2")) == 1
    out, err = capsys.readouterr()
    assert err == "fastnn: error: training diverged at epoch 3, batch 2: lower --lr\n"
    assert out == "" and not (tmp_path / "m.npz").exists() and len(epochs) == 3


def test_cli_resume_of_a_patience_stopped_run_trains_no_more(tmp_path, capsys):
    args = ["--epochs", "60", "--validation-fraction", "0.2", "--patience", "1", "--lr", "0.05",
            "--checkpoint-dir", str(tmp_path / "ck")]  # fmt: skip
    assert main(_train(tmp_path, *args)) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["stopped_early"]
    assert main(["train", "--resume", str(tmp_path / "ck"), "--quiet", "--json", "--out",
                 str(tmp_path / "again.npz")]) == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert (again["epochs"], again["kept_epoch"]) == (first["epochs"], first["kept_epoch"])
    for a, b in zip(load_model_file(tmp_path / "m.npz")[0],
                    load_model_file(tmp_path / "again.npz")[0], strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_cli_resume_with_dropout_and_schedule_is_bit_identical(tmp_path, capsys, monkeypatch):
    from fastnn import checkpoint

    args = ["--epochs", "4", "--dropout", "0.2", "--schedule", "onecycle", "--lr", "0.01"]
    assert main(_train(tmp_path, *args, out="straight.npz")) == 0
    real = checkpoint.InterruptFlag.__enter__

    def enter_and_interrupt(self):  # Ctrl-C as training starts: a checkpoint after epoch 1
        real(self)
        os.kill(os.getpid(), signal.SIGINT)
        return self

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.InterruptFlag, "__enter__", enter_and_interrupt)
        assert main(_train(tmp_path, *args, out="cut.npz")) == 130
    assert main(["train", "--resume", str(tmp_path / "cut.ckpt"), "--quiet",
                 "--out", str(tmp_path / "resumed.npz")]) == 0  # fmt: skip
    capsys.readouterr()
    straight, resumed = (load_model_file(tmp_path / f"{n}.npz") for n in ("straight", "resumed"))
    for a, b in zip(straight[0], resumed[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert [h["loss"] for h in resumed[1]["history"]] == [h["loss"] for h in straight[1]["history"]]


def test_cli_resumes_a_checkpoint_from_before_dropout(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(_train(tmp_path, "--epochs", "1", "--checkpoint-dir", str(ck))) == 0
    params, meta, extra = load_model_file(ck / "checkpoint.npz")
    for key in ("dropout", "schedule", "warmup", "patience"):
        del meta["user"]["run"][key]
    del meta["training_state"]["dropout_seed"]
    save_model_file(ck / "checkpoint.npz", params, meta, extra)
    capsys.readouterr()
    assert main(["train", "--resume", str(ck), "--epochs", "2", "--quiet", "--json",
                 "--out", str(tmp_path / "r.npz")]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert (result["epochs"], result["dropout"], result["schedule"]) == (2, 0.0, "constant")
