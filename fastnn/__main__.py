"""``python -m fastnn ...``: the ``fastnn`` command line, where the console script is not on
the PATH."""

import sys

from fastnn.cli import main

sys.exit(main())
