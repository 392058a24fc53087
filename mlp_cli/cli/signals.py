"""How `mlp train` ends on a signal: the first one saves, a second one stops at once.

Ctrl-C (SIGINT), SIGTERM (a cluster scheduler, ``kill``) and SIGHUP (a closed terminal or SSH
session) all ask the training loop to stop after the current step; it saves ``last.npz`` and
the command exits with 128 + the signal's number (130, 143, 129) and one line saying how to
continue. A second signal while the command is still at work stops it at once (``StopNow``
unwinds through the atomic writes, so a checkpoint cut short leaves the previous file and no
temporary one) with one line naming the checkpoint that remains; one that arrives while the
command is already ending prints that line too, and once the command has stopped on a signal the
rest are ignored while it prints its line and exits. No signal ever meets Python's default handler
and its traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopNow(BaseException):  # noqa: N818  (like KeyboardInterrupt: not an error of the tool's)
    """A second signal: stop at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopOnSignals:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.run_dir: Path | None = None  # set once known: where a checkpoint may remain
        self.working = False  # inside ``at_work``: a second signal raises StopNow
        self._previous: dict[int, Any] = {}

    def requested(self) -> bool:
        return self.signum is not None

    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        elif self.working:
            raise StopNow(signum)
        else:  # the command is ending already, with its own line: say what remains all the same
            os.write(2, f"error: {stopped_at_once(self.run_dir)}\n".encode("utf-8", "replace"))

    @contextlib.contextmanager
    def at_work(self) -> Iterator[None]:
        self.working = True
        try:
            yield
        finally:
            self.working = False

    def __enter__(self) -> StopOnSignals:
        for signum in SIGNALS:
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


def stopped_at_once(run_dir: Path | None) -> str:
    return f"stopped at once by a second signal; {remains(run_dir)}"


def remains(run_dir: Path | None) -> str:
    """Which checkpoint is left, and how to continue from it."""
    from mlp_cli.errors import MlpError
    from mlp_cli.training.checkpoint import load_checkpoint

    if run_dir is None or not (run_dir / "last.npz").exists():
        return "no checkpoint was saved"
    last = run_dir / "last.npz"
    try:
        saved = load_checkpoint(last)
    except MlpError:
        return f"{last} could not be read"
    return (f"the last checkpoint is {last} (epoch {saved.epoch}, step {saved.step}); "
            f"continue with: mlp train --resume {last}")
