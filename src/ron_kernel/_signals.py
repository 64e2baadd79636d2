"""wait_for_ctrl_c: a cooperative shutdown trigger for the running event loop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable

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
    received: asyncio.Future[signal.Signals] = loop.create_future()
    previous = {sig: signal.getsignal(sig) for sig in wanted}

    def _on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    installed: list[signal.Signals] = []
    try:
        for sig in wanted:
            loop.add_signal_handler(sig, _on_signal, sig)
            installed.append(sig)
        await received
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            # remove_signal_handler resets to SIG_DFL (or default_int_handler for SIGINT);
            # put back exactly what was there before us.
            handler = previous[sig]
            if handler is not None:
                signal.signal(sig, handler)
