"""Signals: SIGINT / SIGTERM end a command with one line and exit 130 / 143; a training run saves
a checkpoint at the current step first.

The CLI turns both signals into `Stopped` (typer would swallow a KeyboardInterrupt into a silent
exit 130). Inside the training loop `StopFlag` takes over: the first SIGINT or SIGTERM only sets a
flag; the loop sees it at the next step boundary, saves a checkpoint there (once, atomically) and
raises `Interrupted` saying where it is and how to continue. A second signal of the same kind
stops at once. A different second signal is only noted: `torchrun` forwards a terminal's Ctrl-C
to its workers as SIGTERM, and that must not cut the save short.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from personadlg.errors import PersonadlgError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """130 for SIGINT, 143 for SIGTERM: 128 + the signal number, as shells report it."""
    return 128 + int(signum)


class Stopped(BaseException):
    """A signal ended the command (raised by the CLI's handlers, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = exit_code(signum)


class Interrupted(PersonadlgError):
    """A training run stopped on a signal after saving; the message says where and how to continue."""

    def __init__(self, message: str, *, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = exit_code(signum)


def raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def signals_raise_stopped() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Stopped` inside the block (main thread only)."""
    with _handlers(raise_stopped):
        yield


@contextlib.contextmanager
def _handlers(handler: object) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)  # type: ignore[arg-type]
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class StopFlag:
    """The first signal received during the training loop (0 = none)."""

    def __init__(self) -> None:
        self.signum = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signum:  # the same signal twice: stop now
            raise Stopped(signum)
        if not self.signum:
            self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Record SIGINT and SIGTERM in this flag inside the block."""
        with _handlers(self._handle):
            yield self
