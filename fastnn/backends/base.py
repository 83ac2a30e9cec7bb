"""The Backend interface, and the reference maths written against ``self.xp``.

Conventions: samples are rows, so ``x`` is batch x features and ``W`` is fan_in x fan_out
(the from-scratch notebooks used columns, ``W @ x``; rows match scikit-learn and PyTorch).
Parameters travel as one flat list ``[W0, b0, W1, b1, ...]``; the last layer has no
activation ("identity") and feeds the output's loss, named by scikit-learn's ``out_activation_``:
``output="softmax"`` (one label per row: softmax cross-entropy against integer labels),
``"logistic"`` (multi-label: a sigmoid and a binary cross-entropy per output, against a 0/1
matrix), ``"identity"`` (regression: half the squared error against a float matrix) or
``"exp"`` (Poisson regression: half the Poisson deviance of exp(logits)).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy
import scipy.sparse
from threadpoolctl import threadpool_limits

from fastnn.dropout import keep_mask
from fastnn.optim import Optimizer, OptimizerState

HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")  # identity is also the output's
REGRESSION_OUTPUTS = ("identity", "exp")  # squared error, Poisson deviance

Array = Any  # an array of the backend's array module


def dense_rows(backend: Backend, X: Any, rows: Any) -> Array:
    """``X[rows]`` (a slice or an index array) on ``backend``. A scipy sparse ``X`` stays
    sparse on the host and is densified here, one minibatch or chunk at a time, never whole."""
    if not scipy.sparse.issparse(X):
        return X[rows]
    if not isinstance(rows, slice):
        rows = backend.to_numpy(rows)
    return backend.asarray(X[rows].toarray())


class Backend:
    """How to compute. This class *is* the reference: fast backends override hot verbs only."""

    name = "reference"
    xp = numpy

    # ---- arrays -------------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Array:
        """``a`` as an array where this backend computes (no copy when already there)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Array) -> numpy.ndarray:
        """``a`` as a host numpy array."""
        return numpy.asarray(a)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self.xp.zeros(shape, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for queued work to finish (a no-op on the CPU)."""

    def warm_up(
        self,
        params: list[Array],
        state: OptimizerState,
        X: Array,
        y_idx: Array,
        batch_size: int,
        activation: str,
        opt: Optimizer,
        output: str = "softmax",
        weights: Array | None = None,
    ) -> None:
        """Pay a training run's one-time costs (JIT compilation, a device's start) before its
        first timed epoch, leaving ``params``, ``state`` and every random stream untouched.

        Nothing to pay here; the numba backend compiles its kernels.
        """

    @contextlib.contextmanager
    def limit_threads(self, n_threads: int | None) -> Iterator[None]:
        """Run the block on at most ``n_threads`` CPU threads (None: leave as is)."""
        if n_threads is None:
            yield
            return
        with threadpool_limits(limits=n_threads):
            yield

    @contextlib.contextmanager
    def scoring_between_epochs(self, params: list[Array]) -> Iterator[None]:
        """Run the block (a validation score inside a training run, whose next epoch follows
        at once) so that it leaves nothing behind that slows that epoch; a no-op here."""
        yield

    # ---- layers -------------------------------------------------------------------------
    def linear(self, x: Array, W: Array, b: Array, activation: str) -> Array:
        """y = act(x @ W + b)."""
        z = x @ W + b
        if activation == "relu":
            return self.xp.maximum(z, 0)
        if activation == "tanh":
            return self.xp.tanh(z)
        if activation == "sigmoid":
            return self.sigmoid(z)
        return z

    def linear_backward(
        self, dy: Array, x: Array, W: Array, y: Array, activation: str, need_dx: bool
    ) -> tuple[Array | None, Array, Array]:
        """Gradients of ``y = act(x @ W + b)`` given dL/dy; act' is read from the output y."""
        if activation == "relu":
            dz = dy * (y > 0)
        elif activation == "tanh":
            dz = dy * (1 - y * y)
        elif activation == "sigmoid":
            dz = dy * (y * (1 - y))
        else:
            dz = dy
        dW = x.T @ dz
        db = dz.sum(axis=0)
        dx = dz @ W.T if need_dx else None
        return dx, dW, db

    def softmax_xent(self, logits: Array, y_idx: Array) -> tuple[Array, Array]:
        """Mean cross-entropy of softmax(logits) against integer labels, and dL/dlogits.

        Stable for any finite logits: log-softmax via the row maximum (log-sum-exp).
        """
        return self._mean_loss(logits, y_idx, "softmax")

    def softmax(self, logits: Array) -> Array:
        """Row-wise probabilities, stable for any finite logits."""
        e = self.xp.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def sigmoid_xent(self, logits: Array, targets: Array) -> tuple[Array, Array]:
        """Binary cross-entropy of sigmoid(logits) against 0/1 targets, summed over the outputs
        and averaged over the rows (scikit-learn's multi-label loss), and dL/dlogits.

        Stable for any finite logits: log(1 + e^-|z|) never overflows.
        """
        return self._mean_loss(logits, targets, "logistic")

    def sigmoid(self, logits: Array) -> Array:
        """Element-wise probabilities, stable for any finite logits."""
        e = self.xp.exp(-self.xp.abs(logits))
        return self.xp.where(logits >= 0, 1 / (1 + e), e / (1 + e))

    # ---- the output layer: "softmax" or "logistic" ----------------------------------------
    def output_loss(
        self, logits: Array, targets: Array, output: str, weights: Array | None = None
    ) -> tuple[Array, Array]:
        """(mean loss, dL/dlogits) of the output layer; with per-row ``weights``, the weighted
        mean (scikit-learn's ``sample_weight``: sum of w * loss over the sum of w)."""
        if weights is not None:
            return self._weighted_loss(logits, targets, output, weights)
        if output == "softmax":  # a verb the fast backends override
            return self.softmax_xent(logits, targets)
        return self._mean_loss(logits, targets, output)

    def _mean_loss(self, logits: Array, targets: Array, output: str) -> tuple[Array, Array]:
        """output_loss without weights: the rows' mean loss, and its gradient."""
        row_loss, dlogits = self._row_losses(logits, targets, output)
        dlogits /= logits.shape[0]
        return row_loss.mean(), dlogits

    def _weighted_loss(
        self, logits: Array, targets: Array, output: str, weights: Array
    ) -> tuple[Array, Array]:
        """output_loss with row weights: each row's loss and gradient, weighted."""
        row_loss, dlogits = self._row_losses(logits, targets, output)
        share = (weights / weights.sum()).astype(logits.dtype)
        return (share * row_loss).sum(), dlogits * share[:, None]

    def _row_losses(self, logits: Array, targets: Array, output: str) -> tuple[Array, Array]:
        """Each row's loss, and each row's gradient of it with respect to its logits: the
        output layer's maths, which _mean_loss and _weighted_loss average.

        Stable for any finite logits: log-softmax via the row maximum (log-sum-exp), and
        log(1 + e^-|z|), which never overflows. The squared error is scikit-learn's: the loss
        averages the outputs, its gradient (logits - targets) does not (the same with one
        output; with several, scikit-learn's own ``loss_`` and gradient differ by that factor).
        Poisson: y log(y / p) - y + p summed over the outputs, p = exp(logits), gradient p - y.
        """
        xp = self.xp
        if output == "identity":
            diff = logits - targets
            return 0.5 * (diff * diff).mean(axis=1), diff
        if output == "exp":
            p = xp.exp(logits)
            ylogy = targets * (xp.log(xp.where(targets > 0, targets, 1)) - logits)
            return (ylogy - targets + p).sum(axis=1), p - targets
        if output == "logistic":
            row_loss = (xp.maximum(logits, 0) - logits * targets
                        + xp.log1p(xp.exp(-xp.abs(logits)))).sum(axis=1)  # fmt: skip
            return row_loss, self.sigmoid(logits) - targets
        rows = xp.arange(logits.shape[0])
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        dlogits = xp.exp(log_probs)
        dlogits[rows, targets] -= 1
        return -log_probs[rows, targets], dlogits

    def output_probs(self, logits: Array, output: str) -> Array:
        """What the output layer predicts: probabilities per class (softmax) or per label
        (logistic), or a regression's values (identity: the logits, exp: their exponential)."""
        if output == "identity":
            return logits
        if output == "exp":
            return self.xp.exp(logits)
        return self.sigmoid(logits) if output == "logistic" else self.softmax(logits)

    def hits(self, logits: Array, targets: Array, output: str) -> Array:
        """How many rows are predicted right (row_hits)."""
        return self.row_hits(logits, targets, output).sum()

    def row_hits(self, logits: Array, targets: Array, output: str) -> Array:
        """Per row, whether it is predicted right: the top class is the label, or every
        label is; never for a regression (no value is "right")."""
        if output in REGRESSION_OUTPUTS:
            return self.xp.zeros(logits.shape[0], dtype=bool)
        if output == "logistic":
            return ((logits > 0) == (targets > 0.5)).all(axis=1)
        return logits.argmax(axis=1) == targets

    # ---- optimizer updates (in place) ---------------------------------------------------
    def sgd_update(
        self,
        param: Array,
        grad: Array,
        velocity: Array | None,
        lr: float,
        momentum: float,
        nesterov: bool,
        weight_decay: float,
    ) -> None:
        """SGD, with momentum when ``velocity`` is given, in scikit-learn's formulation: the
        velocity holds the learning rate (v = momentum * v - lr * g, then p += v, or with
        Nesterov p += momentum * v - lr * g), so a changed rate acts on new gradients only
        (PyTorch's v = momentum * v + g scales the whole velocity by the current rate)."""
        g = grad + weight_decay * param if weight_decay else grad
        if velocity is None:
            param -= lr * g
            return
        velocity *= momentum
        velocity -= lr * g
        param += momentum * velocity - lr * g if nesterov else velocity

    def adam_update(
        self,
        param: Array,
        grad: Array,
        m: Array,
        v: Array,
        t: int,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
    ) -> None:
        """Adam with bias correction at step ``t`` (1-based) and L2 weight decay, in
        scikit-learn's formulation: the bias corrections scale the step size, and epsilon is
        added to sqrt(v) (PyTorch adds it to the corrected sqrt(v / (1 - beta2 ** t)))."""
        g = grad + weight_decay * param if weight_decay else grad
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        step = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        param -= step * m / (self.xp.sqrt(v) + eps)

    # ---- composites: one network, one step ----------------------------------------------
    def forward(self, params: list[Array], x: Array, activation: str) -> Array:
        """Logits of the network for the rows of ``x``."""
        n_layers = len(params) // 2
        for i in range(n_layers):
            act = activation if i < n_layers - 1 else "identity"
            x = self.linear(x, params[2 * i], params[2 * i + 1], act)
        return x

    def dropout(
        self, h: Array, seed: int, step: int, layer: int, rate: float
    ) -> tuple[Array, Array]:
        """(h * mask, mask): hidden layer ``layer``'s output with the units fastnn.dropout's
        hash drops in training step ``step`` set to 0 and the kept ones scaled by 1 / (1 -
        rate); the mask is what backpropagation multiplies by."""
        mask = keep_mask(self.xp, seed, step, layer, h.shape, rate, h.dtype)
        return h * mask, mask

    def loss_and_grads(
        self, params: list[Array], x: Array, y_idx: Array, activation: str,
        output: str = "softmax", weights: Array | None = None, *, dropout: float = 0.0,
        seed: int = 0, step: int = 0,
    ) -> tuple[Array, Array, list[Array]]:  # fmt: skip
        """(mean loss, number of correct predictions, gradients in the order of ``params``);
        the mean weighted by ``weights`` per row when given. With ``dropout``, each hidden
        layer's output is masked (``self.dropout`` of ``seed`` and ``step``), and so is its
        gradient; act' is taken from the unmasked output."""
        n_layers = len(params) // 2
        inputs, outputs, masks = [x], [], []
        for i in range(n_layers):
            hidden = i < n_layers - 1
            out = self.linear(inputs[-1], params[2 * i], params[2 * i + 1],
                              activation if hidden else "identity")  # fmt: skip
            outputs.append(out)
            mask = None
            if hidden and dropout:
                out, mask = self.dropout(out, seed, step, i, dropout)
            masks.append(mask)
            inputs.append(out)
        logits = outputs[-1]
        loss, delta = self.output_loss(logits, y_idx, output, weights)
        correct = self.hits(logits, y_idx, output)
        grads: list[Array] = [None] * len(params)
        for i in reversed(range(n_layers)):
            act = activation if i < n_layers - 1 else "identity"
            if masks[i] is not None:
                delta = delta * masks[i]
            delta, grads[2 * i], grads[2 * i + 1] = self.linear_backward(
                delta, inputs[i], params[2 * i], outputs[i], act, need_dx=i > 0
            )
        return loss, correct, grads

    def apply_update(
        self, params: list[Array], grads: list[Array], state: OptimizerState, opt: Optimizer
    ) -> None:
        """One optimizer step on every parameter, in place, at the schedule's rate for this
        update; weight decay on weights only."""
        lr = opt.rate(state.step)
        state.step += 1
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            wd = opt.weight_decay if i % 2 == 0 else 0.0
            if opt.name == "adam":
                m, v = state.slots["m"][i], state.slots["v"][i]
                self.adam_update(p, g, m, v, state.step, lr, opt.beta1, opt.beta2, opt.eps, wd)
            else:
                velocity = state.slots["velocity"][i] if opt.momentum else None
                self.sgd_update(p, g, velocity, lr, opt.momentum, opt.nesterov, wd)

    def train_step(
        self,
        params: list[Array],
        state: OptimizerState,
        x: Array,
        y_idx: Array,
        activation: str,
        opt: Optimizer,
        output: str = "softmax",
        weights: Array | None = None,
    ) -> tuple[Array, Array]:
        """Forward, loss, backward and update on one minibatch; returns (loss, correct), the
        loss with ``opt.alpha``'s penalty of the weights before the update, as scikit-learn's.

        With row ``weights`` the loss is their weighted mean and ``alpha`` is over the batch's
        total weight instead of its rows, as in scikit-learn; a batch of total weight 0 changes
        nothing. ``opt``'s dropout and schedule apply to this step, number ``state.step``."""
        rows = x.shape[0] if weights is None else float(weights.sum())
        if rows == 0:
            return self.xp.zeros((), dtype=x.dtype), 0
        loss, correct, grads = self.loss_and_grads(
            params, x, y_idx, activation, output, weights, dropout=opt.dropout,
            seed=opt.dropout_seed, step=state.step,
        )  # fmt: skip
        if opt.alpha:
            loss = loss + 0.5 * opt.alpha / rows * self.squared_weights(params)
            opt = dataclasses.replace(opt, weight_decay=opt.weight_decay + opt.alpha / rows)
        self.apply_update(params, grads, state, opt)
        return loss, correct

    def squared_weights(self, params: list[Array]) -> Array:
        """The sum of the squares of every weight (not the biases): the L2 penalty's norm."""
        return sum((W * W).sum() for W in params[::2])

    def train_batches(
        self,
        params: list[Array],
        state: OptimizerState,
        X: Array,
        y_idx: Array,
        index: Array | None,
        start: int,
        stop: int,
        batch_size: int,
        activation: str,
        opt: Optimizer,
        output: str = "softmax",
        weights: Array | None = None,
    ) -> tuple[Array, Array]:
        """Train on consecutive minibatches of rows ``index[start:stop]`` (``start:stop`` when
        ``index`` is None), ``batch_size`` rows each, the last possibly fewer.

        Returns (sum of the per-sample losses, number of correct predictions). A backend may
        fuse the whole run; it must match this loop numerically.
        """
        loss_sum = correct = 0
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            rows = slice(lo, hi) if index is None else index[lo:hi]
            xb, yb = dense_rows(self, X, rows), y_idx[rows]
            wb = None if weights is None else weights[rows]
            loss, n_correct = self.train_step(params, state, xb, yb, activation, opt, output, wb)
            loss_sum = loss_sum + loss * (hi - lo)
            correct = correct + n_correct
        return loss_sum, correct
