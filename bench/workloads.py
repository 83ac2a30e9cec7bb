"""The benchmark workloads and their data: MNIST-shaped, synthetic, seeded, no download."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

N_TRAIN, N_FEATURES, N_CLASSES = 60000, 784, 10
N_INFERENCE = 10000


@dataclass(frozen=True)
class Workload:
    """One benchmark: a network, how it is trained, and what one timed round does."""

    name: str
    hidden: tuple[int, ...]
    batch_size: int  # N_TRAIN for full-batch gradient descent
    solver: str  # "sgd" (plain) or "adam"
    lr: float
    inference: bool = False  # time predict_proba on N_INFERENCE rows instead of an epoch
    activation: str = "relu"
    dropout: float = 0.0  # the hidden layers' dropout rate
    schedule: str | None = None  # fastnn.schedule's name, over the whole timed run

    @property
    def sizes(self) -> tuple[int, ...]:
        return (N_FEATURES, *self.hidden, N_CLASSES)

    @property
    def flops(self) -> float:
        """Floating-point operations of one timed round (multiply-add = 2)."""
        macs = [a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=False)]
        if self.inference:
            return 2.0 * N_INFERENCE * sum(macs)
        # forward, weight gradients, and input gradients of every layer but the first (the
        # gradient with respect to the data is never needed)
        return 2.0 * N_TRAIN * (2 * sum(macs) + sum(macs[1:]))

    @property
    def samples(self) -> int:
        return N_INFERENCE if self.inference else N_TRAIN


WORKLOADS = {
    w.name: w
    for w in [
        Workload("seed", (10,), 64, "sgd", 0.1),
        Workload("small", (128,), 128, "sgd", 0.1),
        Workload("medium", (256, 128), 256, "adam", 0.001),
        Workload("fullbatch", (10,), N_TRAIN, "sgd", 0.1),
        Workload("inference", (128,), 128, "sgd", 0.1, inference=True),
    ]
}

# What dropout (0.2) and a cosine schedule cost an epoch of fastnn-numba: small (784-128-10,
# the fused kernel) and medium (784-256-128-10, BLAS layers), each on and off side by side
# (bench/test_bench.py's test_dropout_schedule_cost)
DROPOUT_WORKLOADS = {
    f"{base}-dropout-{mode}": replace(WORKLOADS[base], name=f"{base}-dropout-{mode}", **settings)
    for base in ("small", "medium")
    for mode, settings in (("off", {}), ("on", {"dropout": 0.2, "schedule": "cosine"}))
}


def synthetic_mnist(seed: int = 0, n: int = N_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """n (60000) x 784 float32 pixels in [0, 1] with 10 balanced, learnable classes."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % N_CLASSES)
    prototypes = rng.random((N_CLASSES, N_FEATURES), dtype=np.float32)
    X = rng.random((n, N_FEATURES), dtype=np.float32)
    X *= 0.5
    X += 0.5 * prototypes[y]
    return X, y.astype(np.int64)


@dataclass(frozen=True)
class FitWorkload:
    """``MLPClassifier.fit`` (``MLPRegressor.fit`` for regression data) with the same
    hyperparameters in fastnn and scikit-learn: hidden (100,), adam, batch 200, a fixed number
    of epochs (no stopping on a plateau); or lbfgs with ``epochs`` as max_iter, stopping where
    it converges (scikit-learn's default tol)."""

    name: str
    # "mnist-like" (synthetic 60000 x 784) or "digits" (scikit-learn's, 80% train); regression:
    # "regression-like" (synthetic 60000 x 784, regression_like) or "diabetes" (scikit-learn's
    # 442 patients, standardised, 80% train)
    data: str
    epochs: int
    hidden: tuple[int, ...] = (100,)
    batch_size: int = 200
    n_train: int = N_TRAIN
    n_features: int = N_FEATURES
    solver: str = "adam"

    @property
    def regression(self) -> bool:
        return self.data in ("regression-like", "diabetes")

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden, 1 if self.regression else N_CLASSES)

    def estimator_params(self, seed: int) -> dict:
        return dict(
            hidden_layer_sizes=self.hidden, solver=self.solver, batch_size=self.batch_size,
            learning_rate_init=0.001, alpha=1e-4, max_iter=self.epochs,
            n_iter_no_change=self.epochs, shuffle=True, random_state=seed,
        )  # fmt: skip

    @property
    def flops(self) -> float | None:
        """None for lbfgs: its iterations and loss evaluations differ per implementation."""
        if self.solver == "lbfgs":
            return None
        macs = [a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=False)]
        return 2.0 * self.epochs * self.n_train * (2 * sum(macs) + sum(macs[1:]))

    @property
    def samples(self) -> int:
        return self.n_train if self.solver == "lbfgs" else self.epochs * self.n_train


FIT_WORKLOADS = {
    w.name: w
    for w in [
        FitWorkload("fit-mnist", "mnist-like", epochs=10),
        FitWorkload("fit-digits", "digits", epochs=200, n_train=1437, n_features=64),
        FitWorkload(
            "fit-digits-lbfgs", "digits", epochs=200, n_train=1437, n_features=64, solver="lbfgs"
        ),  # fmt: skip
        FitWorkload("fit-regression", "regression-like", epochs=10),
        FitWorkload("fit-diabetes", "diabetes", epochs=200, n_train=353, n_features=10),
    ]
}


@dataclass(frozen=True)
class ConcurrentWorkload:
    """Two identical trainings of ``base`` started at once in two processes, each over
    ``rows`` synthetic samples for ``epochs`` epochs: how much each slows down next to the
    other (the issue's bar: within 2.5x of its time alone)."""

    name: str
    base: Workload
    rows: int
    epochs: int

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.base.sizes

    @property
    def flops(self) -> float:
        """One training's floating-point operations (the other's are the same)."""
        return self.base.flops / N_TRAIN * self.samples

    @property
    def samples(self) -> int:
        return self.rows * self.epochs


# about 0.3 s alone for fastnn-numba on 2 Zen 5 cores, 0.6 s for numpy, 0.8 s for torch
CONCURRENT = ConcurrentWorkload("concurrent", WORKLOADS["small"], rows=20000, epochs=10)


def regression_like(seed: int = 0, n: int = N_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """n (60000) x 784 float32 inputs as synthetic_mnist's and one standardised float32
    target: a fixed random tanh network of them (784-4-1) plus noise, so that a test R^2 of
    about 0.95 is learnable in a few epochs."""
    X, _ = synthetic_mnist(seed, n)
    teacher = np.random.default_rng(12345)
    W = teacher.standard_normal((N_FEATURES, 4)).astype(np.float32) / np.sqrt(N_FEATURES / 12)
    y = np.tanh((X - 0.5) @ W) @ teacher.standard_normal(4).astype(np.float32)
    y += np.random.default_rng(seed + 1).normal(0, 0.2 * y.std(), n).astype(np.float32)
    return X, ((y - y.mean()) / y.std()).astype(np.float32)


def diabetes_split() -> tuple[np.ndarray, ...]:
    """scikit-learn's diabetes data (442 x 10), inputs and target standardised on the training
    rows: (X_train, y_train, X_test, y_test), 353 rows to train."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    y_mean, y_std = y_train.mean(), y_train.std()
    return ((X_train - mean) / std, (y_train - y_mean) / y_std, (X_test - mean) / std,
            (y_test - y_mean) / y_std)  # fmt: skip


@dataclass(frozen=True)
class ScriptWorkload:
    """An unchanged scikit-learn script (examples/sklearn_mlp_script.py: a grid search of 12
    MLPClassifier fits on the digits and one MLPRegressor fit on diabetes), run as it is and
    under fastnn.accel; ``samples`` counts its MLP fits, so "samples/s" reads fits/s. "warm":
    its main() in this process, fastnn's kernels loaded; "cold": a whole new process each run,
    with the imports and the kernel-cache loads."""

    name: str
    samples: int = 13
    flops: None = None
    sizes: tuple[int, ...] = ()


SCRIPT_WORKLOADS = {w.name: w for w in [ScriptWorkload("accel-script"),
                                         ScriptWorkload("accel-script-cold")]}  # fmt: skip
