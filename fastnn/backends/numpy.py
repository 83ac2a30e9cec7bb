"""The numpy backend: the reference maths of ``Backend`` on the CPU, nothing overridden."""

import numpy

from fastnn.backends.base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = numpy
