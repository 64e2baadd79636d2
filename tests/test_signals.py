"""wait_for_ctrl_c: real signals to our own process, on both loops; handlers restored."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from ron_kernel import wait_for_ctrl_c


def _sentinel(signum: int, frame: Any) -> None:  # pragma: no cover - must never run
    raise AssertionError(f"the previous handler ran for signal {signum}")


@pytest.fixture
def sentinel_handlers() -> Iterator[None]:
    """Install a recognisable Python handler for SIGINT/SIGTERM, and restore pytest's after."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in saved:
        signal.signal(sig, _sentinel)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


async def _returns_on(sig: signal.Signals) -> None:
    waiter = asyncio.ensure_future(wait_for_ctrl_c())
    await asyncio.sleep(0)  # let it install its handlers
    assert not waiter.done()
    os.kill(os.getpid(), sig)
    await asyncio.wait_for(waiter, timeout=2.0)
    assert waiter.result() is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_returns_on_signal_and_restores_previous_handlers(sig, sentinel_handlers):
    await _returns_on(sig)
    assert signal.getsignal(signal.SIGINT) is _sentinel
    assert signal.getsignal(signal.SIGTERM) is _sentinel


async def test_restores_handlers_when_cancelled(sentinel_handlers):
    waiter = asyncio.ensure_future(wait_for_ctrl_c())
    await asyncio.sleep(0)
    assert signal.getsignal(signal.SIGINT) is not _sentinel  # ours is installed meanwhile
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert signal.getsignal(signal.SIGINT) is _sentinel
    assert signal.getsignal(signal.SIGTERM) is _sentinel


async def test_can_wait_again_after_a_signal(sentinel_handlers):
    await _returns_on(signal.SIGINT)
    await _returns_on(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is _sentinel


async def test_only_the_signals_asked_for(sentinel_handlers):
    waiter = asyncio.ensure_future(wait_for_ctrl_c([signal.SIGUSR1]))
    await asyncio.sleep(0)
    assert signal.getsignal(signal.SIGINT) is _sentinel  # untouched while waiting
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.wait_for(waiter, timeout=2.0)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


async def test_no_signals_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one signal"):
        await wait_for_ctrl_c(())


async def test_outside_the_main_thread_raises_runtime_error():
    def in_thread() -> None:
        asyncio.run(wait_for_ctrl_c())

    with pytest.raises(RuntimeError, match="main thread"):
        await asyncio.to_thread(in_thread)
