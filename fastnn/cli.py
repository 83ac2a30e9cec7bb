"""``fastnn`` command line: train, evaluate, predict, plot, compile, info; a thin layer over the
Python API.

Every user error ends as one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

from fastnn import __version__, checkpoint
from fastnn.backends import backend_names, get_backend, unavailable_reason
from fastnn.backends.base import HIDDEN_ACTIVATIONS
from fastnn.checkpoint import CHECKPOINT_FILE, RUN_SETTINGS, Interrupted
from fastnn.data import DATASET_NAMES
from fastnn.errors import FastnnError, TrainingDiverged
from fastnn.io import DTYPES, available_memory, json_default
from fastnn.schedule import SCHEDULES

OPTIMIZERS = ("sgd", "momentum", "adam")
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "adam": 0.001}
# The default recipe (README's "Recipes"), chosen on a validation split of Fashion-MNIST's
# training set: one hidden layer of 512 relu units, dropout 0.3, cosine decay over 40 epochs
# (test accuracy 0.903-0.905 in 28-42 s of training on 2 Zen 4 cores)
DEFAULT_HIDDEN = (512,)
DEFAULT_DROPOUT = 0.3
DEFAULT_SCHEDULE = "cosine"
DEFAULT_EPOCHS = 40
T = TypeVar("T")


class UsageError(FastnnError):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


class _Typed(argparse.Action):
    """argparse's "store" that also adds its dest to ``namespace.typed``: what the user typed,
    whatever the value (a typed default counts), for --resume to compare."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.typed = frozenset({*getattr(namespace, "typed", ()), self.dest})


class _TypedFlag(_Typed):
    """argparse's "store_true", recording that it was typed."""

    def __init__(self, option_strings: Any, dest: str, default: Any = False, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, const=True, default=default, **kwargs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit
MAX_WEIGHT_DECAY = 10.0  # beyond it weight decay only zeroes or explodes the weights
MAX_HIDDEN_LAYERS = 64
MAX_HIDDEN_UNITS = 65536  # per hidden layer
MAX_HIDDEN_WEIGHTS = 2**26  # between hidden layers, in all: refused before any allocation


def _hidden_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(_positive_int(part) for part in text.split(","))
    between = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    if len(sizes) > MAX_HIDDEN_LAYERS:
        problem = f"{len(sizes)} hidden layers exceed fastnn's limit of {MAX_HIDDEN_LAYERS}"
    elif max(sizes) > MAX_HIDDEN_UNITS:
        problem = f"{max(sizes)} units in a layer exceed fastnn's limit of {MAX_HIDDEN_UNITS}"
    elif between > MAX_HIDDEN_WEIGHTS:
        problem = (
            f"{between} weights between hidden layers exceed fastnn's limit of "
            f"{MAX_HIDDEN_WEIGHTS} (2**26)"
        )
    else:
        return sizes
    raise argparse.ArgumentTypeError(f"{problem}; got {text!r}")


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {MAX_SEED}], got {text!r}")
    return value


def _momentum(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _weight_decay(text: str) -> float:
    value = _non_negative_float(text)
    if value > MAX_WEIGHT_DECAY:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, {MAX_WEIGHT_DECAY:g}] (a larger decay only zeroes or "
            f"explodes the weights), got {text!r}"
        )
    return value


def _batch_size(text: str) -> int | str:
    return "full" if text == "full" else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastnn", description="Train and use MLPs on MNIST-style data.")
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a network, report test accuracy, save the model")
    # every option of train records that it was typed: --resume compares the typed settings
    p.register("action", None, _Typed)
    p.register("action", "store", _Typed)
    p.register("action", "store_true", _TypedFlag)
    p.set_defaults(typed=frozenset())
    _add_backend(p, default=None)  # None: auto, or a resumed run's own backend
    _add_dataset(p, default="mnist")
    p.add_argument(
        "--hidden",
        type=_hidden_sizes,
        default=DEFAULT_HIDDEN,
        metavar="N[,N...]",
        help=f"hidden layer widths (default: {','.join(map(str, DEFAULT_HIDDEN))})",
    )
    p.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="relu")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate (default: sgd 0.1, momentum 0.01, adam 0.001)",
    )
    p.add_argument(
        "--momentum",
        type=_momentum,
        default=0.9,
        help="momentum coefficient for --optimizer momentum (default: 0.9)",
    )
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=128,
        metavar="N|full",
        help="minibatch rows, or 'full' for full-batch gradient descent (default: 128)",
    )
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help=f"(default: {DEFAULT_EPOCHS})"
    )
    p.add_argument(
        "--weight-decay",
        type=_weight_decay,
        default=0.0,
        help="L2 weight decay added to weight gradients (default: 0)",
    )
    p.add_argument(
        "--dropout",
        type=_fraction,
        default=DEFAULT_DROPOUT,
        metavar="P",
        help="drop this share of every hidden layer's units in each training step "
        f"(default: {DEFAULT_DROPOUT}; 0 for none)",
    )
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=DEFAULT_SCHEDULE,
        help="learning-rate schedule over the run's epochs, per step "
        f"(default: {DEFAULT_SCHEDULE})",
    )
    p.add_argument(
        "--warmup",
        type=_non_negative_float,
        default=0.0,
        metavar="EPOCHS",
        help="linear learning-rate warm-up over this many epochs (onecycle: its rise; default: 0)",
    )
    p.add_argument("--seed", type=_seed, default=0, help=f"0 to {MAX_SEED} (default: 0)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads to use")
    p.add_argument(
        "--out", default="model.npz", help="where to save the model (default: model.npz)"
    )
    p.add_argument(
        "--validation-fraction",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="hold out this share of the training set (stratified), score it after every "
        "epoch, and keep the weights of the best epoch (default: 0, none)",
    )
    p.add_argument(
        "--patience",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --validation-fraction: stop after N epochs without a better validation "
        "accuracy (default: train every epoch)",
    )
    p.add_argument(
        "--plot",
        metavar="DIR",
        help="after training, write the figures (curves, confusion, mistakes, weights, "
        "activations) as PNGs to DIR; needs the plot extra",
    )
    p.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="after every epoch, save everything needed to continue exactly to "
        f"DIR/{CHECKPOINT_FILE} (atomically: the last good one is never lost)",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run checkpointed in DIR exactly where it stopped, with its own "
        "settings (--epochs sets a new total)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out file (without it, train refuses before training)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("evaluate", help="accuracy and confusion matrix of a saved model")
    p.add_argument("model")
    _add_dataset(p, default=None)
    _add_backend(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="predict the classes of images in a .npy or IDX file")
    p.add_argument("model")
    p.add_argument("input", help=".npy array (N, features) or (N, H, W), or an IDX images file")
    _add_backend(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "plot", help="figures of a trained model or checkpointed run: curves, confusion, ..."
    )
    p.add_argument("model", metavar="RUN_OR_MODEL", help="a model file or a --checkpoint-dir")
    _add_dataset(p, default=None)
    _add_backend(p)
    p.add_argument("--out", default="plots", help="directory for the PNGs (default: plots)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "compile",
        help="compile every numba kernel into numba's on-disk cache now (e.g. in a Docker "
        "build step), so that no run waits for it",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        action="append",
        help="compile for this dtype only; repeat for several (default: float32 and float64)",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "info", help="backends, versions, threads, devices, compile target and kernel paths"
    )
    p.add_argument("--json", action="store_true")
    return parser


def _add_backend(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument("--backend", choices=backend_names(), default=default, help="(default: auto)")


def _add_dataset(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--dataset",
        default=default,
        metavar="NAME|PATH",
        help="mnist, fashion-mnist, digits, or a path: IDX directory, .npz, .csv"
        + (f" (default: {default})" if default else " (default: the training set's)"),
    )
    p.add_argument("--data-home", default=None, help="scikit-learn download cache directory")


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning

    from fastnn.data import load
    from fastnn.estimator import DivergenceWarning
    from fastnn.train import check_exploding
    from fastnn.warmup import announce_compiles

    # everything that can be refused is refused here, before any long work
    _check_out(args.out, args.overwrite)
    if args.patience is not None and not args.validation_fraction and not args.resume:
        raise UsageError(
            "fastnn train: error: --patience needs --validation-fraction F: it counts epochs "
            "without a better validation accuracy"
        )
    if args.resume:
        model, run = _resumed_model(args)
    else:
        run = {k: getattr(args, k) for k in RUN_SETTINGS}
        run["lr"] = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
        backend = args.backend or "auto"  # "auto" is resolved with the data: by the work
        run["backend"] = backend if backend == "auto" else get_backend(backend).name
        run["epochs"] = args.epochs or DEFAULT_EPOCHS
        if run["dataset"] not in DATASET_NAMES and Path(run["dataset"]).exists():
            run["dataset"] = str(Path(run["dataset"]).resolve())  # resumable from elsewhere
        model = None
    if run["warmup"] > run["epochs"]:
        raise UsageError(
            f"fastnn train: error: --warmup {run['warmup']:g} is longer than the run's "
            f"{run['epochs']} epochs; shorten the warm-up or raise --epochs"
        )
    checkpoint_dir = _checkpoint_dir(args)
    if args.plot:
        from fastnn.plot import require_matplotlib

        require_matplotlib()  # before training, not after
        _as_usage(checkpoint.check_directory, args.plot, "--plot")
    data = load(run["dataset"], seed=run["seed"], data_home=args.data_home)
    _check_data(data, run, model)
    if run["backend"] == "auto":
        run["backend"] = _auto_backend(run, data)
    X_train, y_train, validation = data.X_train, data.y_train, None
    if run["validation_fraction"]:
        X_train, X_val, y_train, y_val = _split_validation(data, run)
        validation = (X_val, y_val)
    if model is None:
        model = _new_model(run, len(X_train))
    model.set_params(n_threads=args.threads, verbose=0, progress=_show_progress(args))
    done = len(model.loss_curve_) if args.resume else 0
    interrupted = checkpoint.InterruptFlag()
    # the cross-entropy alone: --weight-decay's penalty, which the loss includes, can be large
    # and is not divergence. The epoch's loss averaged the penalty of weights between the last
    # epoch's and these, so the larger of the two is taken off (the first epoch, whose start
    # is not known here, is not judged with weight decay)
    data_losses: list[float] = []
    penalties: list[float] = []

    def on_epoch_end(model: Any, stats: Any) -> bool:
        # an exploded loss stops the run before its checkpoint: the last good one stays
        if run["weight_decay"]:  # in float64: weights that exploded overflow float32's sum
            squares = sum(float(np.square(W, dtype=np.float64).sum()) for W in model.coefs_)
            penalties.append(run["weight_decay"] / 2 * squares)
            penalty = max(penalties[-2:])
            data_losses.append(stats.loss - penalty if math.isfinite(penalty) else stats.loss)
        else:
            data_losses.append(stats.loss)
        if len(data_losses) > 1 or not run["weight_decay"]:
            check_exploding(data_losses, len(model.classes_), run["lr"])
        patience_out = _out_of_patience(model, run["patience"])
        if patience_out:
            run["stopped_early"] = len(model.loss_curve_)  # a resume has nothing left to do
        if args.checkpoint_dir or args.resume or interrupted.raised:
            checkpoint.save_checkpoint(model, checkpoint_dir, run)
        return interrupted.raised or patience_out

    t0 = time.perf_counter()
    warm_up_seconds = 0.0  # compiling kernels before the first epoch: not training time
    with interrupted:  # Ctrl-C or SIGTERM: after the epoch (a checkpoint), or after the save
        if run["epochs"] > done and not run.get("stopped_early"):
            model.set_params(warm_start=True, max_iter=run["epochs"] - done)
            announce = not (args.quiet or args.json)  # a cold numba cache, once per process
            with warnings.catch_warnings(), announce_compiles(announce):
                warnings.simplefilter("ignore", ConvergenceWarning)  # the user chose --epochs
                warnings.simplefilter("error", DivergenceWarning)  # a divergence is an error
                try:
                    model.fit(X_train, y_train, validation_data=validation,
                              on_epoch_end=on_epoch_end)  # fmt: skip
                except DivergenceWarning as warning:
                    raise warning.diverged from None
            warm_up_seconds = model.warm_up_seconds_
        elif model.early_stopping:  # a finished run's checkpoint holds the last weights
            model.use_best_weights()
        train_seconds = time.perf_counter() - t0 - warm_up_seconds
        epochs = len(model.loss_curve_)
        if interrupted.raised:
            raise Interrupted(
                checkpoint.interrupted_message(epochs, run["epochs"], checkpoint_dir, args.out),
                exit_code=interrupted.exit_code,
            )
        model.set_params(max_iter=run["epochs"])  # the file describes the whole run
        accuracy = float(model.score(data.X_test, data.y_test))
        pixel_max = float(data.X_train.max())  # predict's check of its input's scale
        meta = {"dataset": run["dataset"], "test_accuracy": accuracy, "pixel_max": pixel_max}
        model.save(args.out, metadata=meta)
    if interrupted.raised:  # during the final score or save, which completed
        raise Interrupted(
            f"fastnn: interrupted after the run's last epoch; the model is saved in {args.out}",
            exit_code=interrupted.exit_code,
        )
    if args.plot:
        from fastnn.plot import save_all

        save_all(model, data.X_test, data.y_test, args.plot)
    samples = sum(h["samples"] for h in model.history_[done:])
    result = {
        "backend": model.backend,
        "dataset": run["dataset"],
        "layer_sizes": [model.n_features_in_, *run["hidden"], model.n_outputs_],
        "activation": run["activation"],
        "optimizer": run["optimizer"],
        "learning_rate": run["lr"],
        "batch_size": model.batch_size,
        "epochs": epochs,
        "dtype": run["dtype"],
        "seed": run["seed"],
        "dropout": run["dropout"],
        "schedule": run["schedule"],
        "warmup": run["warmup"],
        **_kept_epoch(model, run),
        "test_accuracy": accuracy,
        "train_seconds": train_seconds,
        "samples_per_second": samples / train_seconds if train_seconds > 0 else 0.0,
        "warm_up_seconds": warm_up_seconds,
        "model": str(args.out),
        "history": model.history_,
    }
    if not args.json:
        if "kept_epoch" in result:
            stop = " (stopped: no better validation accuracy for --patience epochs)"
            print(
                f"kept epoch {result['kept_epoch']} of {epochs}: validation accuracy "
                f"{result['validation_accuracy']:.4f}{stop if result['stopped_early'] else ''}"
            )
        warm_up = f" (+ {warm_up_seconds:.1f} s kernel warm-up)" if warm_up_seconds >= 0.5 else ""
        print(
            f"test accuracy {accuracy:.4f} | {epochs} epoch{'s' * (epochs != 1)} in "
            f"{train_seconds:.2f} s{warm_up} "
            f"| {result['samples_per_second']:,.0f} samples/s | backend {model.backend} "
            f"| final loss {model.loss_curve_[-1]:.4f} | saved {args.out}"
        )
    return result


def _auto_backend(run: dict[str, Any], data: Any) -> str:
    """The backend "auto" means for this run: cupy only for minibatches of enough work."""
    sizes = [data.X_train.shape[1], *run["hidden"], len(np.unique(data.y_train))]
    weights = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    batch = run["batch_size"]
    rows = len(data.X_train) if batch == "full" else min(batch, len(data.X_train))
    return get_backend("auto", step_work=rows * weights).name


def _out_of_patience(model: Any, patience: int | None) -> bool:
    """Whether the last ``patience`` epochs all scored below the best validation accuracy
    (the estimator's validation_scores_, one per epoch of the run)."""
    scores = model.validation_scores_ or []
    if patience is None or not scores:
        return False
    return len(scores) - 1 - int(np.argmax(scores)) >= patience


def _kept_epoch(model: Any, run: dict[str, Any]) -> dict[str, Any]:
    """Which epoch's weights a run with a validation split kept (the first best), its
    validation accuracy, and whether --patience stopped the run; nothing without a split."""
    scores = model.validation_scores_
    if not model.early_stopping or not scores:
        return {}
    best = int(np.argmax(scores))
    stopped = bool(run.get("stopped_early"))
    return {"kept_epoch": best + 1, "validation_accuracy": scores[best], "stopped_early": stopped}


def _split_validation(data: Any, run: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """Stratified, seeded hold-out of ``validation_fraction`` of the training set."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            data.X_train, data.y_train, test_size=run["validation_fraction"],
            stratify=data.y_train, random_state=run["seed"],
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(
            f"fastnn train: error: --validation-fraction {run['validation_fraction']}: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from exc


def _new_model(run: dict[str, Any], n_train: int) -> Any:
    from fastnn.estimator import MLPClassifier

    batch = run["batch_size"]
    batch = batch if batch == "full" else min(batch, n_train)
    model = MLPClassifier(
        hidden_layer_sizes=tuple(run["hidden"]),
        activation=run["activation"],
        solver="adam" if run["optimizer"] == "adam" else "sgd",
        alpha=0.0,
        batch_size=batch,
        learning_rate_init=run["lr"],
        n_iter_no_change=run["epochs"],  # exactly --epochs epochs: no stopping on a plateau
        early_stopping=bool(run["validation_fraction"]),  # keeps the best epoch's weights
        random_state=run["seed"],
        momentum=run["momentum"] if run["optimizer"] == "momentum" else 0.0,
        nesterovs_momentum=run["nesterov"],
        backend=run["backend"],
        dtype=run["dtype"],
        dropout=run["dropout"],
        lr_schedule=run["schedule"],
        warmup_epochs=run["warmup"],
        schedule_epochs=run["epochs"],
    )
    if run["weight_decay"]:
        # the estimator's alpha is scikit-learn's (over each batch's rows): F * W on full batches
        rows = n_train if batch == "full" else batch
        model.set_params(alpha=run["weight_decay"] * rows)
    return model


def _resumed_model(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The model and run settings of the checkpoint in ``--resume DIR``; refuses a typed run
    setting that differs from the run's, and an --epochs below the epochs already done."""
    model, run = _as_usage(checkpoint.load_checkpoint, args.resume, args.backend or "auto")
    typed = {key: getattr(args, key) for key in RUN_SETTINGS if key in args.typed}
    _as_usage(checkpoint.check_resume_settings, run, typed)
    _as_usage(checkpoint.check_resume_epochs, args.epochs, len(model.loss_curve_), args.resume)
    run["backend"] = get_backend(args.backend or run["backend"]).name  # usable here, and loaded
    model.set_params(backend=run["backend"])
    if args.epochs:
        run["epochs"] = args.epochs
    model.set_params(n_iter_no_change=max(run["epochs"], 1), schedule_epochs=run["epochs"])
    return model, run


def _as_usage(check: Callable[..., T], *args: Any) -> T:
    """``check(*args)``, its CheckpointError as the train command's one-line usage error."""
    try:
        return check(*args)
    except checkpoint.CheckpointError as exc:
        raise UsageError(f"fastnn train: error: {exc}") from exc


def _check_out(out: str, overwrite: bool) -> None:
    """Refuse, before training, an --out that could not be written or would replace a file
    silently: a directory, a missing or unwritable directory, a special file, an existing
    file without --overwrite."""
    path = Path(out)
    where = f"fastnn train: error: --out {out if out.strip() else repr(out)}"
    if not path.name or path.name == ".." or out.endswith(os.sep) or path.is_dir():
        raise UsageError(f"{where} is a directory; give a file path such as {path / 'model.npz'}")
    if path.suffix == ".ckpt" or path.name == CHECKPOINT_FILE:
        raise UsageError(
            f"{where}: {CHECKPOINT_FILE} and .ckpt are the names of checkpoints (Ctrl-C saves "
            "to MODEL.ckpt/); give the model another name, such as model.npz"
        )
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{where}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{where}: {parent} is not a directory")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise UsageError(f"{where} exists and is not a regular file; choose another path")
        if not overwrite:
            raise UsageError(
                f"{where} already exists; pass --overwrite to replace it, or choose another path"
            )
    if not checkpoint.can_write_in(parent):
        raise UsageError(f"{where}: cannot write in {parent} (permission denied or read-only)")


def _checkpoint_dir(args: argparse.Namespace) -> Path:
    """Where this run checkpoints, checked before training: a new run never overwrites
    another run's checkpoint; stale temporaries of a killed save are removed."""
    resumed = Path(args.resume) if args.resume else None
    if args.checkpoint_dir:
        directory = Path(args.checkpoint_dir)
        _as_usage(checkpoint.check_directory, directory, "--checkpoint-dir")
        same = resumed is not None and directory.resolve() == resumed.resolve()
        if checkpoint.holds_checkpoint(directory) and not same:
            raise UsageError(
                f"fastnn train: error: --checkpoint-dir {directory} already holds another run's "
                f"{CHECKPOINT_FILE}: continue that run with --resume {directory}, or give "
                "another directory"
            )
    elif resumed is not None:
        directory = resumed
    else:  # Ctrl-C's checkpoint, next to --out: it belongs to --out, as --overwrite does
        directory = Path(args.out).with_suffix(".ckpt")
        _as_usage(checkpoint.check_directory, directory, f"--out {args.out}: Ctrl-C's checkpoint")
        if checkpoint.holds_checkpoint(directory) and not args.overwrite:
            raise UsageError(
                f"fastnn train: error: {directory} holds the checkpoint of an interrupted run "
                f"(Ctrl-C saves there): continue it with --resume {directory}, pass --overwrite "
                "to start over, or give --checkpoint-dir"
            )
    checkpoint.remove_stale_temps(directory)
    checkpoint.remove_stale_temps(Path(args.out).parent, Path(args.out).name)  # a killed save
    return directory


def _check_data(data: Any, run: dict[str, Any], model: Any) -> None:
    """Refuse, before training, a dataset whose training and test sets (or a resumed model)
    disagree on the number of features: scoring after the run would fail."""
    n_train, n_test = data.X_train.shape[1], data.X_test.shape[1]
    if n_train != n_test:
        raise UsageError(
            f"fastnn train: error: --dataset {run['dataset']}: the training set has {n_train} "
            f"features per sample but the test set has {n_test}"
        )
    if model is not None and model.n_features_in_ != n_train:
        raise UsageError(
            f"fastnn train: error: --dataset {run['dataset']} has {n_train} features per sample "
            f"but the resumed run's model expects {model.n_features_in_}"
        )
    sizes = [n_train, *run["hidden"], len(np.unique(data.y_train))]
    weights = sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
    # parameters, gradients and up to two optimizer slots (Adam's moments), at the least
    needed, memory = 4 * weights * np.dtype(run["dtype"]).itemsize, available_memory()
    if memory is not None and needed > memory:
        raise UsageError(
            f"fastnn train: error: --hidden {','.join(map(str, run['hidden']))}: a network of "
            f"{weights:,} parameters needs {needed / 2**30:.1f} GiB to train (parameters, "
            f"gradients, optimizer state) but {memory / 2**30:.1f} GiB is available; use "
            "smaller hidden layers"
        )


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and not args.json and sys.stderr.isatty()


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    from fastnn.estimator import load_model

    model = _classifier(load_model(args.model, backend=args.backend), args.model)
    dataset, data = _model_dataset(model, args)
    predicted = model.predict(data.X_test)
    accuracy = float(np.mean(predicted == data.y_test))
    labels = np.union1d(model.classes_, data.y_test)
    with warnings.catch_warnings():  # "a single label was found": labels= is given, so noise
        warnings.simplefilter("ignore", UserWarning)
        matrix = confusion_matrix(data.y_test, predicted, labels=labels)
    if not args.json:
        print(f"accuracy {accuracy:.4f} on {len(data.y_test)} test samples of {dataset}")
        print(
            "confusion matrix (rows: true, columns: predicted, labels "
            f"{', '.join(map(str, labels.tolist()))}):"
        )
        print(matrix)
    return {
        "model": args.model,
        "dataset": dataset,
        "n_samples": len(data.y_test),
        "accuracy": accuracy,
        "labels": labels.tolist(),
        "confusion_matrix": matrix.tolist(),
    }


def _model_dataset(model: Any, args: argparse.Namespace) -> tuple[str, Any]:
    """(name, data) of ``--dataset``, else of the data the model was trained on, split with
    the model's seed so that its test rows are the ones it never saw."""
    from fastnn.data import DataWarning, load, warn_unseen_labels

    meta = model.metadata_
    run = meta.get("run") if isinstance(meta.get("run"), dict) else {}
    named = [d for d in (meta.get("dataset"), run.get("dataset")) if isinstance(d, str) and d]
    dataset = args.dataset or (named or ["mnist"])[0]
    seed = model.random_state if isinstance(model.random_state, int) else 0
    with warnings.catch_warnings():  # unseen test labels: checked against the model's classes
        warnings.simplefilter("ignore", DataWarning)
        data = load(dataset, seed=seed, data_home=args.data_home)
    _check_features(model, data.X_test.shape[1], dataset)
    warn_unseen_labels(dataset, data.y_test, model.classes_, "are not among the model's classes")
    return dataset, data


def _classifier(model: Any, path: Any) -> Any:
    """The model, if it is what the command line predicts with: a classifier of one label
    per sample (regressors and multi-label models are for the Python API)."""
    kind = type(model).__name__
    if kind != "MLPClassifier" or model.out_activation_ != "softmax":
        what = "a multi-label MLPClassifier" if kind == "MLPClassifier" else f"an {kind}"
        raise UsageError(
            f"fastnn: error: {path} is {what}; the command line evaluates, predicts and plots "
            "classifiers of one label per sample: use its predict() from Python"
        )
    return model


def cmd_plot(args: argparse.Namespace) -> dict[str, Any]:
    from fastnn.estimator import load_model
    from fastnn.plot import require_matplotlib, save_all

    require_matplotlib()
    source = Path(args.model)
    path = source / CHECKPOINT_FILE if source.is_dir() else source
    model = _classifier(load_model(path, backend=args.backend), path)
    dataset, data = _model_dataset(model, args)
    paths = save_all(model, data.X_test, data.y_test, args.out)
    if not args.json:
        print(f"wrote {', '.join(p.name for p in paths)} to {args.out} (test split of {dataset})")
    return {"figures": [str(p) for p in paths], "dataset": dataset}


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    from fastnn.data import load_inputs
    from fastnn.estimator import load_model

    model = _classifier(load_model(args.model, backend=args.backend), args.model)
    X = load_inputs(args.input)
    _check_features(model, X.shape[1], args.input)
    _check_input_scale(model, X, args.input)
    proba = model.predict_proba(X)
    predictions = model.classes_[proba.argmax(axis=1)]
    if not args.json:
        for label in predictions.tolist():
            print(label)
    return {"predictions": predictions.tolist(), "confidence": proba.max(axis=1).tolist()}


def _check_input_scale(model: Any, X: np.ndarray, source: str) -> None:
    """Warn when the inputs, once scaled, use far less of the pixel range than the model's
    training data did (e.g. digits' native 0..16 integers read as 0..255)."""
    from fastnn.data import DataWarning, training_pixel_max

    expected = training_pixel_max(model.metadata_)
    top = float(X.max()) if X.size else 0.0
    if expected is None or top == 0 or top >= expected / 4:  # blank images say nothing
        return
    trained_on = model.metadata_.get("dataset") or "its training data"
    hint = "; digits' native 0..16 values: divide by 16" if trained_on == "digits" else ""
    warnings.warn(
        f"{source}: pixels reach at most {top:.3g} once scaled, but the model's training data "
        f"({trained_on}) reach {expected:g}; scale inputs as in training (integers are read as "
        f"0..255, floats must lie in [0, 1]){hint}",
        DataWarning,
        stacklevel=2,
    )


def cmd_compile(args: argparse.Namespace) -> dict[str, Any]:
    from fastnn.warmup import compile_kernels, compile_target

    dtypes = list(dict.fromkeys(args.dtype or DTYPES))
    target = compile_target()
    if not args.json:
        print(
            f"compiling fastnn's numba kernels for {target['cpu']} ({target['isa']}), "
            f"{' and '.join(dtypes)}: every kernel path and optimizer",
            flush=True,
        )

    def show(done: Any) -> None:
        if not args.json:
            print(f"  {done.kernel} ({done.variant}): {done.seconds:.1f} s", flush=True)

    report = compile_kernels(dtypes, on_compiled=show)
    cache = _numba_cache()
    if not args.json:
        what = (
            f"compiled {len(report.compiled)} kernels" if report.compiled else "nothing to compile"
        )
        print(f"{what} in {report.seconds:.1f} s; numba's cache in {report.cache_dir} is {cache}")
    return {
        "target": target,
        "dtypes": dtypes,
        "paths": report.paths,
        "compiled": [vars(c) for c in report.compiled],
        "seconds": report.seconds,
        "cache_dir": report.cache_dir,
        "numba_kernel_cache": cache,
    }


def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    import numba
    import sklearn
    from threadpoolctl import threadpool_info

    from fastnn._compat import cuda_device_problem, has_cupy
    from fastnn.warmup import compile_target, kernel_paths

    backends = {name: unavailable_reason(name) or "available" for name in backend_names()[:-1]}
    info: dict[str, Any] = {
        "fastnn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scikit-learn": sklearn.__version__,
        "auto_backend": get_backend("auto").name,
        "backends": backends,
        "blas": [
            {k: lib.get(k) for k in ("internal_api", "version", "num_threads")}
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        ],
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_kernel_cache": _numba_cache(),
        "compile_target": compile_target(),
        "kernel_paths": kernel_paths(),
        "cuda": cuda_device_problem() or _cuda_devices(),
    }
    if has_cupy():
        import cupy

        info["cupy"] = cupy.__version__
    if not args.json:
        for key, value in info.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for k, v in value.items():
                    print(f"  {k}: {v}")
            else:
                print(f"{key}: {value}")
    return info


def _numba_cache() -> str:
    from fastnn.backends.numba import kernel_cache_status

    warm, total = kernel_cache_status()
    state = "warm" if warm == total else "cold" if warm == 0 else "partly warm"
    return f"{state} ({warm}/{total} kernels compiled on disk)"


def _cuda_devices() -> list[dict[str, Any]]:
    import cupy

    devices = []
    for i in range(cupy.cuda.runtime.getDeviceCount()):
        props = cupy.cuda.runtime.getDeviceProperties(i)
        devices.append(
            {
                "name": props["name"].decode(),
                "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
                "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            }
        )
    return devices


def _check_features(model: Any, n_features: int, source: str) -> None:
    if n_features != model.n_features_in_:
        raise UsageError(
            f"fastnn: error: {source} has {n_features} features per sample but the model expects "
            f"{model.n_features_in_}; use data of the kind the model was trained on"
        )


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "plot": cmd_plot,
    "compile": cmd_compile,
    "info": cmd_info,
}


def _run_command(args: argparse.Namespace) -> dict[str, Any]:
    """Run one command with each warning shown as one line, ``fastnn: warning: ...``."""
    from fastnn.data import DataWarning

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.simplefilter("default", DataWarning)  # shown once, even under -W error
        return COMMANDS[args.command](args)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    text = str(message).strip() or category.__name__
    print(f"fastnn: warning: {text.splitlines()[0]}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastnn`` console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        result = _run_command(args)
        if getattr(args, "json", False):
            print(json.dumps(result, default=json_default))
        sys.stdout.flush()
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code  # 130 for Ctrl-C, 143 for SIGTERM
    except TrainingDiverged as exc:
        print(f"fastnn: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which has closed the pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (FastnnError, ValueError, TypeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"fastnn: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastnn: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "fastnn: error: out of memory; use smaller hidden layers (--hidden), a smaller "
            "--batch-size, or a smaller dataset",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
