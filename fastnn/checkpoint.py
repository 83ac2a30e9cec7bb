"""Checkpoints of a command-line training run: saving one after every epoch, refusing to
overwrite another run's, resuming with the run's own settings, cleaning up after a kill, and
stopping cleanly on Ctrl-C or SIGTERM.

The estimator is driven only through public means: ``fit(on_epoch_end=...)``, ``set_params``,
``save(training_state=True)`` and ``load_model``.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastnn.errors import FastnnError

CHECKPOINT_FILE = "checkpoint.npz"
# what defines a training run: saved in checkpoints, fixed when resuming
RUN_SETTINGS = ("dataset", "hidden", "activation", "optimizer", "lr", "momentum", "nesterov",
                "batch_size", "weight_decay", "seed", "dtype", "validation_fraction", "dropout",
                "schedule", "warmup", "patience")  # fmt: skip
# settings newer than the first checkpoints, and what a checkpoint without them ran with
LATER_SETTINGS = {"dropout": 0.0, "schedule": "constant", "warmup": 0.0, "patience": None}


# fastnn.io.atomic_write's temporary names for DIR/checkpoint.npz (tempfile.mkstemp's random
# middle part): left behind only when the process is killed during a save
def _temp_name(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]+\.tmp$")


class CheckpointError(FastnnError, ValueError):
    """A checkpoint directory that cannot be used as asked (the CLI names the flag)."""


class Interrupted(FastnnError):
    """Training stopped by Ctrl-C or SIGTERM after saving a checkpoint; ``exit_code`` is the
    shell's 128 + signal number (130, 143)."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def checkpoint_path(directory: str | Path) -> Path:
    """The checkpoint file of a run directory."""
    return Path(directory) / CHECKPOINT_FILE


def holds_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` already holds a run's checkpoint (which a new run must not
    overwrite)."""
    return checkpoint_path(directory).exists()


def check_directory(directory: str | Path, flag: str) -> None:
    """Refuse, before training, a checkpoint directory that is a file or cannot be created
    or written, so that the first epoch's save cannot fail after work was done."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{flag} {directory}: exists and is not a directory")
    if not directory.exists():
        parent = next((p for p in directory.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise CheckpointError(f"{flag} {directory}: {parent} is not a directory")
        writable = parent
    else:
        writable = directory
    if not can_write_in(writable):
        raise CheckpointError(f"{flag} {directory}: cannot write in {writable}")


def can_write_in(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (tried, not guessed from the mode bits:
    root, read-only mounts and ACLs all count)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".fastnn-probe-"):
            return True
    except OSError:
        return False


def remove_stale_temps(directory: str | Path, name: str = CHECKPOINT_FILE) -> list[Path]:
    """Delete the temporary files a save of ``directory/name`` killed with SIGKILL left
    (fastnn.io.atomic_write's, by name only), so that they never accumulate; returns what
    was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = _temp_name(name)
    removed = []
    for path in directory.iterdir():
        if pattern.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def save_checkpoint(model: Any, directory: str | Path, run: Mapping[str, Any]) -> None:
    """Everything to continue exactly (weights, optimizer state, random generator, history,
    the run's settings), atomically: the previous checkpoint stays whole until the new one is
    complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(checkpoint_path(directory), metadata={"run": dict(run)}, training_state=True)


def load_checkpoint(directory: str | Path, backend: str = "auto") -> tuple[Any, dict[str, Any]]:
    """(model, run settings) of the checkpoint in ``directory``; refuses a missing file or a
    model file that is not a training checkpoint."""
    from fastnn.estimator import load_model

    path = checkpoint_path(directory)
    if not path.is_file():
        raise CheckpointError(f"--resume {directory}: no {CHECKPOINT_FILE} there")
    model = load_model(path, backend=backend)
    run = model.metadata_.get("run")
    if isinstance(run, dict):
        run = {**LATER_SETTINGS, **run}
    if not isinstance(run, dict) or not all(k in run for k in (*RUN_SETTINGS, "backend")):
        raise CheckpointError(f"--resume {directory}: {path} is a model file, not a training "
                              "checkpoint")  # fmt: skip
    return model, run


def check_resume_settings(run: Mapping[str, Any], typed: Mapping[str, Any]) -> None:
    """Refuse any run setting the user typed on ``--resume`` that differs from the run's own:
    typed, not "different from its default", so ``--optimizer adam`` on an sgd run is refused
    too."""
    for key in RUN_SETTINGS:
        if key not in typed:
            continue
        given = typed[key]
        if key == "dataset" and _same_file(given, run[key]):
            continue  # the run's data file named another way (relative from elsewhere)
        if json.loads(json.dumps(given)) != run[key]:
            raise CheckpointError(
                f"--{key.replace('_', '-')} {_show(given)} differs from the resumed run's "
                f"{_show(run[key])}: a resumed run keeps its settings (only --epochs, --backend, "
                "--threads, --out, --overwrite, --checkpoint-dir, --quiet and --json may change)"
            )


def _same_file(a: Any, b: Any) -> bool:
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).samefile(b)
    except (OSError, TypeError):
        return False


def check_resume_epochs(epochs: int | None, done: int, directory: str | Path) -> None:
    """Refuse an ``--epochs`` total below the epochs the run has already done (a resumed run
    cannot be shortened: its checkpoint has them all)."""
    if epochs is not None and epochs < done:
        raise CheckpointError(
            f"--epochs {epochs} is below the {done} epochs the run in {directory} has already "
            f"done; --epochs is the run's new total: give {done} or more"
        )


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


class InterruptFlag:
    """While active, the first Ctrl-C or SIGTERM asks training to stop after the current epoch
    (and save a checkpoint); a second Ctrl-C interrupts at once. ``signum`` is the signal."""

    SIGNALS: Iterable[int] = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.raised = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        """The shell's status for death by the signal received: 128 + its number."""
        return 128 + (self.signum or signal.SIGINT)

    def __enter__(self) -> InterruptFlag:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return  # a repeated SIGTERM: the checkpoint is on its way
        self.raised = True
        self.signum = signum
        what = "Ctrl-C again to quit now" if signum == signal.SIGINT else "terminated"
        print(f"\nfastnn: stopping after this epoch to save a checkpoint ({what})",
              file=sys.stderr)  # fmt: skip


def interrupted_message(epochs: int, total: int, directory: str | Path, out: str) -> str:
    """The one line that says where the checkpoint is and how to continue (to the same
    ``--out``)."""
    return (
        f"fastnn: interrupted after epoch {epochs} of {total}; checkpoint saved in "
        f"{directory}; continue with: fastnn train --resume {directory} --out {out}"
    )
