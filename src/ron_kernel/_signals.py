"""wait_for_ctrl_c: a cooperative shutdown trigger for the running event loop."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

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
    """
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in signals:
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, callback, sig)
    except BaseException:
        _restore(loop, previous)
        raise
    return lambda: _restore(loop, previous)


def _restore(loop: asyncio.AbstractEventLoop, previous: dict[signal.Signals, Any]) -> None:
    for sig, handler in previous.items():
        loop.remove_signal_handler(sig)
        if handler is not None:  # None: installed from C, nothing we can put back
            signal.signal(sig, handler)
