"""``python -m fastnn.accel [-v] script.py [args]`` or ``python -m fastnn.accel [-v] -m module
[args]``: run a script or module unchanged with scikit-learn's MLPs on fastnn."""

from __future__ import annotations

import argparse
import os
import runpy
import sys

from . import install, summary
from .log import LOG_ENV

USAGE = "python -m fastnn.accel [-v] (script.py | -m module) [args ...]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fastnn.accel",
        usage=USAGE,
        description="Run a Python script or module with sklearn.neural_network's MLPClassifier "
        "and MLPRegressor accelerated by fastnn. fastnn's settings come from the environment: "
        "FASTNN_BACKEND (auto, numpy, numba, cupy), FASTNN_DTYPE (sklearn: scikit-learn's "
        "rule, the default; float32; float64), FASTNN_THREADS, and FASTNN_ACCEL_LOG.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log each fit and predict, and a summary at exit (-vv: debug)",
    )  # fmt: skip
    parser.add_argument("-m", dest="module", help="run a library module as a script")
    parser.add_argument("target", nargs=argparse.REMAINDER, help="script.py and its arguments")
    args = parser.parse_args(argv)
    if args.module is None and not args.target:
        parser.error("give a script to run, or -m module")
    if args.module is None and not os.path.isfile(args.target[0]):
        parser.error(f"{args.target[0]}: no such script")
    level = {0: None, 1: "info"}.get(args.verbose, "debug")
    if level is not None:
        os.environ[LOG_ENV] = level  # child processes (joblib workers) log alike
    try:
        install()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.module is not None:
            sys.argv = [args.module, *args.target]
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args.target)
            sys.path.insert(0, os.path.dirname(os.path.abspath(args.target[0])))
            runpy.run_path(os.path.abspath(args.target[0]), run_name="__main__")  # as python
    finally:
        if level is not None:
            print(f"fastnn.accel: {summary()}", file=sys.stderr)


if __name__ == "__main__":
    main()
