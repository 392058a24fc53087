"""How a long-running command (`mlp train`, `mlp sweep`) ends on a signal: the first one saves, a
second one stops at once.

Ctrl-C (SIGINT), SIGTERM (a cluster scheduler, ``kill``) and SIGHUP (a closed terminal or SSH
session) all ask the work to stop after the current step (``requested`` is what the training loop
polls; ``on_first_signal`` tells a sweep's trials); it saves its checkpoints and the command exits
with 128 + the signal's number (``mlp_cli.stop_signals.StopExit``: 130, 143, 129) and one line
saying how to continue. A second signal while the command is still at work stops it at once
(``StopNow`` unwinds through the atomic writes, so a checkpoint cut short leaves the previous file
and no temporary one) with one line naming what remains (``remains``); one that arrives while the
command is already ending prints that line too, and once the command has stopped on a signal the
rest are ignored while it prints its line and exits. No signal ever meets Python's default handler
and its traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TypeAlias

from mlp_cli.errors import MlpError
from mlp_cli.stop_signals import STOP_SIGNALS, StopExit

# What signal.signal returns: a handler, SIG_DFL or SIG_IGN, or None (one not set from Python).
Handler: TypeAlias = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class StopNow(BaseException):  # noqa: N818  (like KeyboardInterrupt: not an error of the tool's)
    """A second signal: stop at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def exit_code(self) -> StopExit:
        return StopExit.of(self.signum)


def _nothing() -> None:
    pass


class StopOnSignals:
    """The one stop handler. ``remains`` says what is left and how to continue, for the line a
    second signal prints; the command sets it once it knows (``run_checkpoint_remains``)."""

    def __init__(self, on_first_signal: Callable[[], None] = _nothing) -> None:
        self.signum: int | None = None
        self.on_first_signal = on_first_signal
        self.remains: Callable[[], str] = _no_checkpoint
        self.working = False  # inside ``at_work``: a second signal raises StopNow
        self._previous: dict[int, Handler] = {}

    def requested(self) -> bool:
        return self.signum is not None

    def exit_code(self) -> StopExit:
        return StopExit.of(self.signum or signal.SIGINT)

    def stopped_at_once(self) -> str:
        return f"stopped at once by a second signal; {self.remains()}"

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            self.on_first_signal()
        elif self.working:
            raise StopNow(signum)
        else:  # the command is ending already, with its own line: say what remains all the same
            os.write(2, f"error: {self.stopped_at_once()}\n".encode("utf-8", "replace"))

    @contextlib.contextmanager
    def at_work(self) -> Iterator[None]:
        self.working = True
        try:
            yield
        finally:
            self.working = False

    def __enter__(self) -> StopOnSignals:
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (some test runners): no handlers
                break
        return self

    def __exit__(self, *exc: object) -> None:
        if self.signum is not None:  # ending on a signal, with a line naming the checkpoint: a late
            for signum in self._previous:  # one must not cut that short (nor kill the exit itself)
                signal.signal(signum, signal.SIG_IGN)
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _no_checkpoint() -> str:
    return "no checkpoint was saved"


def run_checkpoint_remains(run_dir: Path) -> str:
    """Which checkpoint of a run is left, and how to continue from it."""
    from mlp_cli.training.checkpoint import load_checkpoint

    last = run_dir / "last.npz"
    if not last.exists():
        return _no_checkpoint()
    try:
        saved = load_checkpoint(last)
    except MlpError:
        return f"{last} could not be read"
    return (f"the last checkpoint is {last} (epoch {saved.epoch}, step {saved.step}); "
            f"continue with: mlp train --resume {last}")


def sweep_remains(directory: Path) -> str:
    """What a sweep leaves, and how to continue it."""
    return f"each trial keeps its last checkpoint in {directory}; run the same command again to continue"
