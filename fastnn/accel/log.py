"""What the accelerator did: one log line per fit and predict (``FASTNN_ACCEL_LOG=info``, or
``python -m fastnn.accel -v``) and a count of each, for tests and summaries."""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter

LOG_ENV = "FASTNN_ACCEL_LOG"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}

logger = logging.getLogger("fastnn.accel")
_counts: Counter[tuple[str, str]] = Counter()


def configure(level: str | None = None) -> None:
    """Log to stderr at ``level`` (default: $FASTNN_ACCEL_LOG; unset: warnings only)."""
    name = (level or os.environ.get(LOG_ENV) or "warning").lower()
    if name not in LEVELS:
        raise ValueError(f"{LOG_ENV}={name!r} is not a log level; use one of {', '.join(LEVELS)}")
    logger.setLevel(LEVELS[name])
    if not any(getattr(h, "_fastnn_accel", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fastnn.accel: %(message)s"))
        handler._fastnn_accel = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def record(call: str, ran: str, detail: str, seconds: float) -> None:
    """Count and log one call: ``call`` "MLPClassifier.fit", ``ran`` "fastnn" or
    "scikit-learn", ``detail`` the backend or the reason for the fallback."""
    _counts[call, ran] += 1
    logger.info("%s: %s (%s) %.3f s", call, ran, detail, seconds)


def counts() -> dict[tuple[str, str], int]:
    """How many calls ran where, by (call, "fastnn" | "scikit-learn"), in this process."""
    return dict(_counts)


def summary() -> str:
    """One line: the calls that ran on fastnn and those that fell back."""
    if not _counts:
        return "no MLP fit or predict ran"
    parts = [f"{call} {ran}: {n}" for (call, ran), n in sorted(_counts.items())]
    return "; ".join(parts)
