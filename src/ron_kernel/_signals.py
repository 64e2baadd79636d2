"""wait_for_ctrl_c: a cooperative shutdown trigger for the running event loop; signal plumbing.

``install_handlers`` runs callbacks in a loop on signals and undoes exactly that;
``install_shared`` lets several subscribers (two kernels in one process) share one signal.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ._plain_signals import DeferredSignal, in_main_thread

DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


async def wait_for_ctrl_c(signals: Iterable[signal.Signals] = DEFAULT_SIGNALS) -> None:
    """Wait until the process receives SIGINT (Ctrl-C) or SIGTERM, then return.

    The handlers are installed in the running loop (``loop.add_signal_handler``) only while this
    coroutine waits; afterwards, or when it is cancelled, the previous handlers are restored, so
    a second Ctrl-C behaves as it did before (by default: ``KeyboardInterrupt``). Must be called
    from the main thread (a POSIX rule for signal handlers); elsewhere it raises ``RuntimeError``.

    >>> async def main() -> None:
    ...     await wait_for_ctrl_c()
    ...     print("draining")
    """
    loop = asyncio.get_running_loop()
    wanted = tuple(dict.fromkeys(signals))
    if not wanted:
        raise ValueError("wait_for_ctrl_c needs at least one signal to wait for")
    if threading.current_thread() is not threading.main_thread():
        # asyncio says RuntimeError here, uvloop ValueError: give callers one documented error.
        raise RuntimeError("wait_for_ctrl_c must be called from the main thread "
                           "(signal handlers can only be installed there)")
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def _on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    restore = install_handlers(loop, wanted, _on_signal)
    try:
        await received
    finally:
        restore()


def install_handlers(loop: asyncio.AbstractEventLoop, signals: Iterable[signal.Signals],
                     callback: Callable[[signal.Signals], None]) -> Callable[[], None]:
    """Run ``callback(sig)`` in ``loop`` on each signal; return a function undoing exactly that.

    ``loop.remove_signal_handler`` alone resets a signal to its default action; the returned
    function puts back whatever Python-level handler was there before (asyncio.Runner's SIGINT
    handler, a test runner's, the embedder's), so nesting and sequencing stay correct.

    A previous handler that deferred a signal (:class:`~ron_kernel._plain_signals.DeferredSignal`,
    ``ron-kernel``'s SIGHUP handler while it starts) hands it over: ``callback`` runs once for
    it, soon after installation.
    """
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in signals:
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, callback, sig)
    except BaseException:
        _restore(loop, previous)
        raise
    for sig, handler in previous.items():
        if isinstance(handler, DeferredSignal) and handler.take():
            loop.call_soon(callback, sig)
    return lambda: _restore(loop, previous)


def _restore(loop: asyncio.AbstractEventLoop, previous: dict[signal.Signals, Any]) -> None:
    for sig, handler in previous.items():
        loop.remove_signal_handler(sig)
        if handler is not None:  # None: installed from C, nothing we can put back
            signal.signal(sig, handler)


class _Shared:
    """One signal's handler in one loop, fanned out to every subscriber."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.callbacks: list[Callable[[signal.Signals], None]] = []
        self.restore: Callable[[], None] = lambda: None

    def fire(self, sig: signal.Signals) -> None:
        for callback in list(self.callbacks):
            try:
                callback(sig)
            except Exception as exc:  # one subscriber's failure must not starve the others
                self.loop.call_exception_handler({
                    "message": f"a {sig.name} subscriber failed", "exception": exc})


_shared: dict[signal.Signals, _Shared] = {}


def install_shared(sig: signal.Signals,
                   callback: Callable[[signal.Signals], None]) -> Callable[[], None]:
    """Run ``callback(sig)`` in the running loop on each ``sig``, alongside other subscribers.

    Every subscriber gets every signal (two kernels in one process both reload on SIGHUP). The
    first subscriber installs one handler (``install_handlers``: the handler that was there
    before is put back, and a deferred signal handed over, when the last one leaves). Raises
    ``RuntimeError`` outside the main thread, or from a loop other than the one the current
    subscribers use (a signal can only wake one loop).
    """
    loop = asyncio.get_running_loop()
    entry = _shared.get(sig)
    if entry is not None and entry.loop is not loop and in_main_thread():
        # The main thread runs `loop` now, so the entry's loop has finished without its
        # subscribers leaving (a kernel never shut down): forget it. Its handler went with its
        # loop; putting back what was there before it could undo a handler installed since.
        del _shared[sig]
        entry = None
    if entry is None:
        if not in_main_thread():
            raise RuntimeError(f"{sig.name} can only be handled in the main thread "
                               "(signal handlers can only be installed there)")
        entry = _Shared(loop)
        entry.restore = install_handlers(loop, (sig,), entry.fire)
        _shared[sig] = entry
    elif entry.loop is not loop:
        raise RuntimeError(f"{sig.name} is already handled in another event loop of this "
                           "process (a signal can only wake one loop)")
    entry.callbacks.append(callback)

    def remove() -> None:
        if callback in entry.callbacks:
            entry.callbacks.remove(callback)
        if not entry.callbacks and _shared.get(sig) is entry:
            del _shared[sig]
            entry.restore()

    return remove
