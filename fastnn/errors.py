"""Exceptions fastnn raises for problems the user can fix; the CLI prints them as one line."""


class FastnnError(Exception):
    """Base class: a problem with the user's input, files or environment, not a bug."""


class DataError(FastnnError, ValueError):
    """A dataset could not be loaded: missing, corrupt or inconsistent files."""


class ModelFileError(FastnnError, ValueError):
    """A model file is missing, corrupt, or not a fastnn model."""


class BackendUnavailableError(FastnnError, RuntimeError):
    """The requested backend cannot run here (package missing, no device)."""


class TrainingDiverged(FastnnError, ArithmeticError, ValueError):
    """The loss or the parameters became NaN or infinite; parameters are left finite. A
    ValueError too, as scikit-learn's MLP raises for non-finite weights."""
