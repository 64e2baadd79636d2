"""What a child gets: waits that respect shutdown, shutdown from inside, typed config."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from ron_kernel import Bus, KernelEvent
from ron_kernel.errors import Canceled
from ron_kernel.kernel import Kernel
from ron_kernel.mailbox import Mailbox
from ron_kernel.supervisor import ChildContext, Supervisor

ARGV = ["--obs-http", "false"]


async def _until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("kind", ["sleep", "bus", "bus_many", "mailbox"])
async def test_waits_end_at_shutdown_instead_of_holding_the_drain(kind):
    bus: Bus[KernelEvent] = Bus(8)
    box: Mailbox[int] = Mailbox(4, name="box")
    outcome: list[object] = []

    async def child(ctx: ChildContext) -> None:
        ctx.ready()
        rx = bus.subscribe()
        if kind == "sleep":
            outcome.append(await ctx.sleep(3600))
            return
        try:
            if kind == "bus":
                await ctx.wait(rx.recv())
            elif kind == "bus_many":
                await ctx.wait(rx.recv_many())
            else:
                await ctx.wait(box.recv())
        except Canceled:
            outcome.append("canceled")

    sup = Supervisor(bus=bus)
    sup.add("c", child, shutdown_timeout=30)
    await sup.start()
    await _until(lambda: sup.snapshot()["c"]["state"] == "running")
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await sup.shutdown(30)
    assert time.monotonic() - started < 1.0  # not the 30 s drain deadline
    assert outcome == ([False] if kind == "sleep" else ["canceled"])
    box.try_send(1)
    assert box.try_recv() == 1  # the cancelled mailbox recv consumed nothing


async def test_wait_returns_the_result_and_sleep_true_when_nothing_interrupts():
    results: list[object] = []

    async def child(ctx: ChildContext) -> None:
        results.append(await ctx.sleep(0.001))
        results.append(await ctx.wait(asyncio.sleep(0, result="value")))
        await ctx.shutdown.wait()

    sup = Supervisor()
    sup.add("c", child)
    async with sup:
        await _until(lambda: len(results) == 2)
    assert results == [True, "value"]


async def test_wait_after_shutdown_raises_at_once_and_closes_the_coroutine():
    caught: list[BaseException] = []

    async def never() -> None:
        raise AssertionError("must not run")

    async def child(ctx: ChildContext) -> None:
        await ctx.shutdown.wait()
        try:
            await ctx.wait(never())
        except Canceled as exc:
            caught.append(exc)

    sup = Supervisor()
    sup.add("c", child)
    await sup.start()
    await asyncio.sleep(0.01)
    await sup.shutdown(1)
    assert len(caught) == 1


async def test_a_waiting_childs_own_cancellation_is_not_mistaken_for_shutdown():
    got: list[str] = []

    async def child(ctx: ChildContext) -> None:
        inner = asyncio.ensure_future(ctx.wait(asyncio.sleep(3600)))
        await asyncio.sleep(0.01)
        inner.cancel()
        try:
            await inner
        except asyncio.CancelledError:
            got.append("cancelled")
        await ctx.shutdown.wait()

    sup = Supervisor()
    sup.add("c", child)
    async with sup:
        await _until(lambda: got == ["cancelled"])


async def test_request_shutdown_from_a_child_drains_the_kernel_and_returns_at_once():
    returned = asyncio.Event()

    async def quitter(ctx: ChildContext) -> None:
        ctx.request_shutdown("done with the batch")
        returned.set()
        await ctx.shutdown.wait()

    k = Kernel(env={}, argv=ARGV, watch_config=False, handle_sighup=False)
    k.supervise("quitter", quitter)
    rx = k.bus.subscribe()
    started = time.monotonic()
    await asyncio.wait_for(k.run(), 10)
    assert returned.is_set()
    assert time.monotonic() - started < 3
    assert k.state == "stopped"
    assert KernelEvent.Shutdown() in rx.try_recv_many()


async def test_await_kernel_shutdown_from_a_child_never_waits_on_itself():
    k = Kernel(env={}, argv=ARGV, watch_config=False, handle_sighup=False)
    done = asyncio.Event()

    async def closer(ctx: ChildContext) -> None:
        await k.shutdown()  # must return at once, not after the drain deadline
        done.set()
        await ctx.shutdown.wait()

    k.supervise("closer", closer)
    started = time.monotonic()
    await asyncio.wait_for(k.run(), 10)
    assert done.is_set() and time.monotonic() - started < 3


async def test_an_error_while_building_children_surfaces_at_once():
    async def stubborn(ctx: ChildContext) -> None:
        await asyncio.Event().wait()  # ignores ctx.shutdown: only cancellation ends it

    started = time.monotonic()
    with pytest.raises(TypeError):
        async with Kernel(env={}, argv=[*ARGV, "--drain-deadline", "20s"], watch_config=False,
                          handle_sighup=False) as k:
            k.supervise("stubborn", stubborn)
            await asyncio.sleep(0.01)
            k.supervise("bad", 42)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2


async def test_ctx_bus_is_the_kernel_bus_and_a_clear_error_without_one():
    got: list[object] = []

    async def child(ctx: ChildContext) -> None:
        try:
            got.append(ctx.bus)
        except RuntimeError as exc:
            got.append(str(exc))
        await ctx.shutdown.wait()

    sup = Supervisor()
    sup.add("c", child)
    async with sup:
        await _until(lambda: bool(got))
    assert "has no bus" in str(got[0])
    async with Kernel(env={}, argv=ARGV, watch_config=False, handle_sighup=False) as k:
        got.clear()
        k.supervise("c", child)
        await _until(lambda: bool(got))
        assert got[0] is k.bus
