"""One exception root for every failure a user can cause, each mapped to a documented exit code.

Internal invariants use ``assert``; these classes are for problems with the user's input or environment.
The CLI turns them into a one-line message and the exit code below (see README, "Exit codes").
"""

from __future__ import annotations


class DfqDeployError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; ``hint`` tells the user how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg}\n  fix: {self.hint}" if self.hint else msg


class ConfigError(DfqDeployError):
    """A configuration value or combination is invalid."""

    exit_code = 2


class DataError(DfqDeployError):
    """Evaluation data is missing or malformed."""

    exit_code = 3


class ModelError(DfqDeployError):
    """A model name, architecture or weights file cannot be used."""

    exit_code = 4


class ExportError(DfqDeployError):
    """Export to ONNX failed or produced a graph that breaks the target profile's rules."""

    exit_code = 5


class RuntimeUnavailableError(DfqDeployError):
    """The requested runtime back-end is not installed or cannot run on this machine."""

    exit_code = 6


class ParityError(DfqDeployError):
    """A runtime's outputs drifted from the PyTorch reference beyond the configured thresholds."""

    exit_code = 7


class TrainingError(DfqDeployError):
    """Training diverged (non-finite loss) or could not start."""

    exit_code = 8


class StorageError(DfqDeployError):
    """The machine refused a write: the disk or a quota is full, a file-size limit (``ulimit -f``) was reached, or
    the file system is read-only. The user's environment, not a bug."""

    exit_code = 9
