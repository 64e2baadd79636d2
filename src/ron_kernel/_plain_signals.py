"""Signal handling that needs no event loop (a leaf: it imports only the standard library).

Two users. ``ron-kernel``'s process installs its handlers from the first line of ``main``, before
anything heavy is imported, so this module must stay cheap to import (no asyncio). And the
kernel's second-signal exit is a plain ``signal.signal`` handler: it runs while the event loop
is blocked (a child calling ``time.sleep``), where a ``loop.add_signal_handler`` callback would
wait for the loop.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, NoReturn

__all__ = ["DeferredSignal", "exit_now", "in_main_thread", "install_plain"]


class DeferredSignal:
    """A signal handler that remembers the signal for later instead of acting on it.

    ``ron-kernel`` installs one for SIGHUP from the first line of ``main``: a SIGHUP then neither
    kills the process (its default action) nor is lost. The first reload trigger installed
    afterwards (``ron_kernel._signals.install_handlers``) takes what is pending and acts on it
    once; after the trigger is removed, this handler is back and SIGHUP is harmless again.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = 0
        """Signals received and not taken yet."""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.pending += 1

    def take(self) -> bool:
        """Whether a signal arrived since the last ``take`` (and forget it)."""
        arrived, self.pending = self.pending > 0, 0
        return arrived


def exit_now(message: str, status: int) -> NoReturn:
    """Leave the process at once: one best-effort line on fd 2, then ``os._exit(status)``.

    Safe in a signal handler: no buffered stream (which may be half-way through a write of its
    own, or broken), no event loop, no unwinding.
    """
    try:
        os.write(2, (message + "\n").encode("utf-8", "backslashreplace"))
    except OSError:  # stderr closed or a broken pipe: leave anyway
        pass
    os._exit(status)


def in_main_thread() -> bool:
    """Whether the caller runs in the main thread (the only one that may install handlers)."""
    return threading.current_thread() is threading.main_thread()


def install_plain(signals: Iterable[signal.Signals],
                  handler: Callable[[int, FrameType | None], Any]) -> Callable[[], None]:
    """Install ``handler`` with ``signal.signal`` for ``signals``; return a function undoing it.

    Main thread only (a POSIX rule Python enforces with ``ValueError``). The undo puts back the
    handlers that were there before.
    """
    previous: dict[signal.Signals, Any] = {}
    for sig in signals:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, old in previous.items():
            if old is not None:  # None: installed from C, nothing we can put back
                signal.signal(sig, old)

    return undo
