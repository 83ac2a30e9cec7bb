"""The ``fastnn`` console script, and ``python -m fastnn`` where it is not on the PATH. A
Ctrl-C while the command line's modules import (seconds, with scikit-learn's) ends in one
line and exit code 130, as during a command."""

import sys


def main() -> int:
    try:
        from fastnn.cli import main as cli_main
    except KeyboardInterrupt:
        print("fastnn: interrupted", file=sys.stderr)
        return 130
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
