"""Learning-rate schedules: the factor of the base rate for each update, from its number.

``constant`` (1, after an optional linear warm-up), ``cosine`` (linear warm-up, then half a
cosine from 1 down to 0 at the last step) and ``onecycle`` (PyTorch's ``OneCycleLR`` with
``anneal_strategy="cos"`` and no momentum cycling: a cosine rise from 1/25 to 1 over the
warm-up, 30% of the steps by default, then a cosine fall to 1/25/1e4). A factor depends only
on the update's number and the schedule, so a run resumed at step t continues exactly, and
every backend applies the same rates. Past the last step the rate stays at its last value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_RISE = 0.3  # PyTorch's pct_start: the rising share of a one-cycle without warm-up
ONECYCLE_START = 25.0  # PyTorch's div_factor: the first rate is the peak over this
ONECYCLE_END = 1e4  # PyTorch's final_div_factor: the last rate is the first over this


@dataclass(frozen=True)
class Schedule:
    """``name`` over ``total_steps`` updates from update number ``start_step`` (a run that
    continues a model's training), with ``warmup_steps`` of linear warm-up (constant, cosine)
    or of rise (onecycle; 0: ONECYCLE_RISE of the steps)."""

    name: str
    total_steps: int
    warmup_steps: int = 0
    start_step: int = 0

    def factor(self, step: int) -> float:
        """The multiple of the base learning rate for update number ``step`` (from 0)."""
        t = min(max(step - self.start_step, 0), self.total_steps - 1)
        if self.name == "onecycle":
            return self._onecycle(t)
        warmup = min(self.warmup_steps, self.total_steps)
        if t < warmup:
            return (t + 1) / warmup
        if self.name == "cosine":
            progress = (t - warmup) / max(1, self.total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    def _onecycle(self, t: int) -> float:
        """PyTorch's two phases: the peak is at step rise - 1, the end at total_steps - 1."""
        rise = self.warmup_steps or ONECYCLE_RISE * self.total_steps
        peak, last = float(rise) - 1, self.total_steps - 1
        start = 1.0 / ONECYCLE_START
        if t <= peak:
            return _cosine_between(start, 1.0, t / peak if peak > 0 else 1.0)
        return _cosine_between(1.0, start / ONECYCLE_END, (t - peak) / (last - peak))


def _cosine_between(start: float, end: float, progress: float) -> float:
    """From ``start`` (progress 0) to ``end`` (1) along half a cosine (PyTorch's
    ``_annealing_cos``)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * progress) + 1)
