"""Zero code change: scikit-learn's ``MLPClassifier`` and ``MLPRegressor`` run on fastnn.

Turn it on before scikit-learn's neural_network module is imported, in one of three ways:
``python -m fastnn.accel script.py`` (or ``-m module``), ``fastnn.accel.install()`` in code,
``%load_ext fastnn.accel`` in IPython or Jupyter. From then on
``sklearn.neural_network.MLPClassifier`` and ``MLPRegressor`` are fastnn.accel's subclasses of
scikit-learn's classes (fastnn.accel.estimators): fits and predictions run on fastnn where it
can serve them and on scikit-learn's own code where it cannot. ``FASTNN_ACCEL_LOG=info`` logs
which ran, per call.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .log import LEVELS, LOG_ENV, configure, counts, summary

__all__ = ["counts", "install", "is_installed", "summary", "uninstall"]

NAMES = ("MLPClassifier", "MLPRegressor")

if os.environ.get(LOG_ENV, "").lower() in LEVELS:  # a joblib worker logs like its parent
    configure()


def install(log_level: str | None = None) -> None:
    """Replace scikit-learn's MLP classes with fastnn's accelerated ones (idempotent); a bad
    ``FASTNN_*`` setting or log level is a one-line ValueError here, before any work."""
    configure(log_level)
    from . import estimators  # binds scikit-learn's own classes before they are replaced

    estimators.fastnn_settings()
    _bind(estimators)


def uninstall() -> None:
    """Give scikit-learn its own MLP classes back (names already imported keep what they
    were bound to)."""
    from . import estimators

    _bind(estimators, original=True)


def _bind(estimators: Any, original: bool = False) -> None:
    """sklearn.neural_network's names (its private module keeps scikit-learn's classes, so
    that their instances still pickle); loky's pickler sends the accelerated classes to
    joblib's worker processes by fastnn's name."""
    import sklearn.neural_network
    from joblib.externals.loky.backend import reduction

    for name in NAMES:
        accelerated = getattr(estimators, name)
        setattr(
            sklearn.neural_network, name, accelerated._sklearn_class if original else accelerated
        )
        if original:
            reduction._dispatch_table.pop(accelerated, None)
        else:
            reduction.register(accelerated, estimators.reduce_for_worker)


def is_installed() -> bool:
    """Whether ``sklearn.neural_network``'s MLP classes are fastnn's accelerated ones."""
    module = sys.modules.get("sklearn.neural_network")
    accelerated = sys.modules.get(f"{__name__}.estimators")
    return bool(module and accelerated) and module.MLPClassifier is accelerated.MLPClassifier


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext fastnn.accel``: install, and say so (names the notebook already imported
    from sklearn.neural_network stay scikit-learn's)."""
    install()
    print("fastnn.accel: sklearn.neural_network's MLPClassifier and MLPRegressor now run on "
          "fastnn; import them after this line")  # fmt: skip


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext fastnn.accel``: scikit-learn's own classes again."""
    uninstall()
