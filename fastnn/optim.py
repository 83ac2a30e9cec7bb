"""Optimizer settings and state: plain SGD, SGD with (Nesterov) momentum, Adam; the
learning-rate schedule and dropout that each step applies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastnn.schedule import Schedule

if TYPE_CHECKING:
    from fastnn.backends.base import Backend

SOLVERS = ("sgd", "adam")


@dataclass(frozen=True)
class Optimizer:
    """Hyperparameters of one update rule; ``name`` is "sgd" (momentum 0 = plain) or "adam".

    Two L2 terms on the weights (not the biases): ``weight_decay`` adds weight_decay * W to
    every step's gradient (PyTorch's); ``alpha`` is scikit-learn's penalty, alpha / 2 * |W|^2
    over the step's rows (their total weight, with sample weights), added to the step's loss,
    its gradient alpha / rows * W, so that a short last batch gets more of it.

    ``schedule`` scales ``lr`` per update (fastnn.schedule; None: constant). ``dropout`` is
    the rate at which each training step drops hidden units, drawn by fastnn.dropout's hash
    from ``dropout_seed`` and the step's number."""

    name: str
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    alpha: float = 0.0
    schedule: Schedule | None = None
    dropout: float = 0.0
    dropout_seed: int = 0

    def rate(self, step: int) -> float:
        """The learning rate of update number ``step`` (0 for the first)."""
        return self.lr if self.schedule is None else self.lr * self.schedule.factor(step)

    @property
    def slot_names(self) -> tuple[str, ...]:
        """Per-parameter state arrays this rule keeps."""
        if self.name == "adam":
            return ("m", "v")
        return ("velocity",) if self.momentum else ()


@dataclass
class OptimizerState:
    """Step counter and per-parameter slots (``slots[name][i]`` belongs to ``params[i]``)."""

    step: int = 0
    slots: dict[str, list[Any]] = field(default_factory=dict)

    def copy(self) -> OptimizerState:
        """A copy whose slot arrays are new arrays (on the same device)."""
        return OptimizerState(self.step, {k: [a.copy() for a in v] for k, v in self.slots.items()})


def init_state(backend: Backend, opt: Optimizer, params: list[Any]) -> OptimizerState:
    """Zeroed state for ``opt`` over ``params``, allocated on ``backend``."""
    return OptimizerState(
        step=0,
        slots={name: [backend.zeros(p.shape, p.dtype) for p in params] for name in opt.slot_names},
    )
