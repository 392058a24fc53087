"""One error hierarchy for the whole tool.

Library modules raise these; only the CLI catches them, prints one line and exits with
``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MlpError(Exception):
    """Base of every error the tool reports to the user as one line."""

    exit_code = 1


class Interrupted(MlpError):
    """Work stopped on request (Ctrl-C, SIGTERM, SIGHUP), its checkpoints saved: the CLI reports
    it as what happened, without an "error:" prefix, and exits 128 + the signal's number."""


class UsageError(MlpError):
    """Bad command-line usage (exit code 2)."""

    exit_code = 2


class MissingFileError(UsageError):
    """A file named on the command line does not exist or is a directory (exit code 2)."""


class ConfigError(MlpError):
    """A configuration file or override is invalid (exit code 2)."""

    exit_code = 2


class OutputPathError(UsageError):
    """An output path where a file cannot go: a device, FIFO, socket or directory is there, or a
    file stands where a directory is needed (exit code 2). Nothing is written."""


class DataError(MlpError):
    """A dataset file is missing, corrupt or fails verification."""


class DownloadError(DataError):
    """Every mirror failed, or the cache cannot be written."""


class CheckpointError(MlpError):
    """A checkpoint is unreadable, tampered, or does not match what is asked of it."""


class TrainingError(MlpError):
    """Training cannot go on (for example the loss became non-finite)."""


class RunDirError(UsageError):
    """A run directory already exists (or cannot be created)."""


class ResourceError(MlpError):
    """The machine lacks what a run needs (memory), found before any work starts."""
