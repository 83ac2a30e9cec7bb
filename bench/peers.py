"""Implementations under test: fastnn on each backend, and the peers a user would pick.

Each starts from the same initial parameters and exposes the same three operations:
``epoch(shuffle)`` (one pass over its data), ``get_params()`` and ``predict_proba(X)``.
``predict_proba`` puts a host array where the implementation computes once, and reuses that
copy while it is given the same array: a GPU's inference round times the products and the copy
of the probabilities back to the host, not the upload of the data.
"""

from __future__ import annotations

import warnings

import numpy as np

from bench.workloads import Workload
from fastnn.backends import get_backend
from fastnn.model import predict_proba
from fastnn.optim import Optimizer, init_state
from fastnn.schedule import Schedule
from fastnn.train import train

SCHEDULE_EPOCHS = 8  # a scheduled workload's schedule spans this many epochs of its rows


def fastnn_optimizer(w: Workload, rows: int) -> Optimizer:
    """The workload's update rule with its dropout (seed 0) and schedule: over
    SCHEDULE_EPOCHS epochs of ``rows`` rows, the first 2% of its steps a linear warm-up."""
    schedule = None
    if w.schedule:
        steps = SCHEDULE_EPOCHS * -(-rows // w.batch_size)
        schedule = Schedule(w.schedule, steps, warmup_steps=steps // 50)
    return Optimizer(w.solver, w.lr, dropout=w.dropout, schedule=schedule)


class FastnnImpl:
    def __init__(self, backend: str, w: Workload, init: list[np.ndarray], X, y) -> None:
        self.backend = get_backend(backend)
        self.w, self.opt = w, fastnn_optimizer(w, len(X))
        self.params = [self.backend.asarray(p.copy()) for p in init]
        self.state = init_state(self.backend, self.opt, self.params)
        self.X, self.y = self.backend.asarray(X), self.backend.asarray(y)
        self.rng = np.random.default_rng(0)
        self._inputs = _Uploads(self.backend.asarray)

    def epoch(self, shuffle: bool = True) -> None:
        train(
            self.backend,
            self.params,
            self.state,
            self.X,
            self.y,
            activation=self.w.activation,
            opt=self.opt,
            epochs=1,
            batch_size=self.w.batch_size,
            shuffle=shuffle,
            rng=self.rng,
        )

    def get_params(self) -> list[np.ndarray]:
        return [self.backend.to_numpy(p) for p in self.params]

    def predict_proba(self, X) -> np.ndarray:
        return predict_proba(self.backend, self.params, self._inputs(X), self.w.activation)


class TorchImpl:
    """The textbook PyTorch loop: Sequential, cross_entropy, zero_grad, backward, step."""

    def __init__(self, device: str, w: Workload, init: list[np.ndarray], X, y) -> None:
        import torch

        self.torch, self.w, self.device = torch, w, device
        layers: list = []
        for i in range(0, len(init), 2):
            linear = torch.nn.Linear(*init[i].shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(init[i].T.copy()))
                linear.bias.copy_(torch.from_numpy(init[i + 1]))
            layers += [linear, torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(device)
        cls = torch.optim.Adam if w.solver == "adam" else torch.optim.SGD
        self.opt = cls(self.model.parameters(), lr=w.lr)
        self.X = torch.from_numpy(X).to(device)
        self.y = torch.from_numpy(y).to(device)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self._inputs = _Uploads(lambda a: torch.from_numpy(a).to(device))

    def epoch(self, shuffle: bool = True) -> None:
        torch, n, bs = self.torch, self.X.shape[0], self.w.batch_size
        order = torch.randperm(n, device=self.device, generator=self.gen) if shuffle else None
        for start in range(0, n, bs):
            if order is None or bs >= n:
                xb, yb = self.X[start : start + bs], self.y[start : start + bs]
            else:
                idx = order[start : start + bs]
                xb, yb = self.X[idx], self.y[idx]
            loss = torch.nn.functional.cross_entropy(self.model(xb), yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        if self.device == "cuda":
            torch.cuda.synchronize()

    def get_params(self) -> list[np.ndarray]:
        out = []
        for m in self.model:
            if isinstance(m, self.torch.nn.Linear):
                out += [m.weight.detach().cpu().numpy().T, m.bias.detach().cpu().numpy()]
        return out

    def predict_proba(self, X) -> np.ndarray:
        with self.torch.no_grad():
            logits = self.model(self._inputs(X))
            return self.torch.softmax(logits, dim=1).cpu().numpy()


class _Uploads:
    """``upload(X)``, done once while the same host array comes back (held, so that its id is
    not reused): the timed inference rounds pass the same array every round."""

    def __init__(self, upload) -> None:
        self.upload, self.host, self.device = upload, None, None

    def __call__(self, X):
        if X is not self.host:
            self.host, self.device = X, self.upload(X)
        return self.device


class SklearnImpl:
    """scikit-learn's MLPClassifier trained one epoch per ``partial_fit`` call."""

    def __init__(self, w: Workload, init: list[np.ndarray], X, y) -> None:
        from sklearn.neural_network import MLPClassifier

        self.w, self.X, self.y = w, X, y
        self.model = MLPClassifier(
            hidden_layer_sizes=w.hidden,
            activation=w.activation,
            solver=w.solver,
            alpha=0.0,
            batch_size=w.batch_size,
            learning_rate_init=w.lr,
            momentum=0.0,
            shuffle=True,
            random_state=0,
        )
        classes = np.arange(init[-1].shape[0])
        with warnings.catch_warnings():  # "batch_size larger than sample size" on 10 rows
            warnings.simplefilter("ignore", UserWarning)
            self.model.partial_fit(X[: len(classes)], classes, classes=classes)  # allocate state
        self.model.coefs_ = [p.copy() for p in init[0::2]]
        self.model.intercepts_ = [p.copy() for p in init[1::2]]
        del self.model._optimizer  # start the optimizer afresh from the shared initial state

    def epoch(self, shuffle: bool = True) -> None:
        self.model.shuffle = shuffle
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.partial_fit(self.X, self.y)

    def get_params(self) -> list[np.ndarray]:
        m = self.model
        return [p for pair in zip(m.coefs_, m.intercepts_, strict=True) for p in pair]

    def predict_proba(self, X) -> np.ndarray:
        return self.model.predict_proba(X)
