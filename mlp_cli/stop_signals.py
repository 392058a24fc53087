"""The signals that stop a long-running command (``mlp train``, ``mlp sweep``), and the exit codes
they end it with: 128 + the signal's number, as a shell reports a command a signal ended.

The first one asks the work to save and stop after its step; the command then exits with the
code named here. The handler lives with the CLI (``mlp_cli.cli.signals``); these names live here,
below every layer, because the training loop and a sweep's trials report them too.
"""

from __future__ import annotations

import signal
from enum import IntEnum


class StopExit(IntEnum):
    """The exit code of a command stopped by each signal."""

    SIGINT = 130  # Ctrl-C
    SIGTERM = 143  # kill, a batch scheduler's time limit
    SIGHUP = 129  # the terminal or the SSH session closed

    @classmethod
    def of(cls, signum: int) -> StopExit:
        return cls(128 + signum)


# The ones this platform has (Windows has no SIGHUP), in the order above.
STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, name) for name in StopExit.__members__ if hasattr(signal, name))
