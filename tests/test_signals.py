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


# ----------------------------------------------------------------------------- shared signals
# (issue 11: two kernels in one process both reload on SIGHUP; a SIGHUP deferred while the
# process starts is handed to the first reload handler)

from ron_kernel._plain_signals import DeferredSignal  # noqa: E402
from ron_kernel._signals import install_shared  # noqa: E402


@pytest.fixture
def usr1_sentinel() -> Iterator[list[int]]:
    seen: list[int] = []
    saved = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        yield seen
    finally:
        signal.signal(signal.SIGUSR1, saved)


async def _until(cond: Any) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_every_subscriber_gets_the_signal_and_one_failing_does_not_starve_the_others(
        usr1_sentinel):
    before = signal.getsignal(signal.SIGUSR1)
    got: list[str] = []
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))

    def failing(sig: signal.Signals) -> None:
        raise RuntimeError("subscriber bug")

    remove_a = install_shared(signal.SIGUSR1, lambda sig: got.append("a"))
    remove_bad = install_shared(signal.SIGUSR1, failing)
    remove_b = install_shared(signal.SIGUSR1, lambda sig: got.append("b"))
    os.kill(os.getpid(), signal.SIGUSR1)
    await _until(lambda: len(got) == 2)
    assert sorted(got) == ["a", "b"] and len(errors) == 1
    remove_a()
    remove_bad()
    os.kill(os.getpid(), signal.SIGUSR1)
    await _until(lambda: len(got) == 3)
    assert got[-1] == "b" and usr1_sentinel == []
    remove_b()  # the last one: the handler that was there before is back
    assert signal.getsignal(signal.SIGUSR1) is before
    remove_b()  # twice: nothing more


async def test_a_deferred_signal_is_handed_to_the_first_subscriber_once():
    deferred = DeferredSignal()
    saved = signal.signal(signal.SIGUSR1, deferred)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        await _until(lambda: deferred.pending == 2)
        got: list[signal.Signals] = []
        remove = install_shared(signal.SIGUSR1, got.append)
        await _until(lambda: got)
        await asyncio.sleep(0.02)
        assert deferred.pending == 0
        # asyncio: exactly once. uvloop also replays, to the handler now installed, the
        # signals its wakeup socket received meanwhile: more calls, same meaning (a reload
        # request; requests coalesce).
        assert got and set(got) == {signal.SIGUSR1} and len(got) <= 3
        remove()
        assert signal.getsignal(signal.SIGUSR1) is deferred
    finally:
        signal.signal(signal.SIGUSR1, saved)


def test_another_loop_or_thread_is_refused_and_a_finished_loop_is_forgotten(usr1_sentinel):

    async def subscribe_and_leave_it() -> None:  # a kernel never shut down
        install_shared(signal.SIGUSR1, lambda sig: None)

    asyncio.run(subscribe_and_leave_it())
    between = signal.getsignal(signal.SIGUSR1)  # its loop closed and took its handler along

    async def in_a_new_loop() -> list[str]:
        got: list[str] = []
        remove = install_shared(signal.SIGUSR1, lambda sig: got.append("new"))
        refused: list[str] = []

        def from_a_thread() -> None:
            async def try_it() -> None:
                install_shared(signal.SIGUSR1, lambda sig: None)

            try:
                asyncio.run(try_it())
            except RuntimeError as exc:
                refused.append(str(exc))

        await asyncio.to_thread(from_a_thread)
        os.kill(os.getpid(), signal.SIGUSR1)
        await _until(lambda: got)
        remove()
        return refused

    refused = asyncio.run(in_a_new_loop())
    assert len(refused) == 1 and "another event loop" in refused[0]
    assert signal.getsignal(signal.SIGUSR1) is between  # what the new subscriber found

    def alone_in_a_thread() -> str:
        async def try_it() -> None:
            install_shared(signal.SIGUSR1, lambda sig: None)

        try:
            asyncio.run(try_it())
        except RuntimeError as exc:
            return str(exc)
        return "installed"

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert "main thread" in pool.submit(alone_in_a_thread).result(timeout=10)
