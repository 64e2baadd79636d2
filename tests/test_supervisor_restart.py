"""Supervisor.restart(name): an operator's restart (stop now, start now), never a crash."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from ron_kernel import Bus, HealthState, KernelEvent, Metrics
from ron_kernel.errors import Empty
from ron_kernel.supervisor import ChildContext, Supervisor


def make(**kw: Any) -> tuple[Supervisor, Bus[KernelEvent], Metrics]:
    bus: Bus[KernelEvent] = Bus()
    health = HealthState()
    health.attach_bus(bus)
    metrics = Metrics(health=health)
    kw = {"min_backoff": 0.001, "max_backoff": 0.004, **kw}
    return Supervisor(bus=bus, metrics=metrics, **kw), bus, metrics


async def until(cond: Any, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.002)


def drain(rx: Any) -> list[KernelEvent]:
    out = []
    while True:
        try:
            out.append(rx.try_recv())
        except Empty:
            return out


class Runs:
    def __init__(self) -> None:
        self.starts: Counter[str] = Counter()
        self.stops: Counter[str] = Counter()

    def healthy(self) -> Any:
        async def child(ctx: ChildContext) -> None:
            self.starts[ctx.name] += 1
            ctx.ready()
            await ctx.shutdown.wait()
            self.stops[ctx.name] += 1

        return child

    def crashing(self) -> Any:
        async def child(ctx: ChildContext) -> None:
            self.starts[ctx.name] += 1
            raise RuntimeError("boom")

        return child


async def test_restart_drains_the_child_and_starts_it_again_without_counting_a_crash():
    sup, bus, metrics = make()
    runs = Runs()
    sup.add("a", runs.healthy())
    sup.add("b", runs.healthy())
    async with sup:
        await until(lambda: runs.starts["a"] == 1 and runs.starts["b"] == 1)
        rx = bus.subscribe()
        await sup.restart("a")
        assert runs.stops["a"] == 1  # drained through its shutdown event, not cancelled
        assert runs.starts == Counter({"a": 2, "b": 1})  # b untouched
        info = sup.snapshot()["a"]
        assert info["state"] == "running" and info["restarts"] == 0
        assert metrics.counters.service_restarts_total.get("a") == 0
        assert metrics.counters.tasks_aborted_total.get("child") == 0
        await until(lambda: metrics.health.snapshot()["services"]["a"] is True)
        assert drain(rx) == [KernelEvent.Health(service="a", ok=False),
                             KernelEvent.Health(service="a", ok=True)]


async def test_one_for_all_restarts_only_the_named_child():
    sup, _, _ = make(strategy="one_for_all")
    runs = Runs()
    for name in ("a", "b", "c"):
        sup.add(name, runs.healthy())
    async with sup:
        await until(lambda: sum(runs.starts.values()) == 3)
        await sup.restart("b")
        assert runs.starts == Counter({"a": 1, "b": 2, "c": 1})


async def test_restart_takes_over_a_scheduled_restart_and_resets_the_backoff():
    sup, _, metrics = make(min_backoff=30.0, max_backoff=30.0, restart_cap=10)
    gate = {"crash": True}
    starts = Counter[str]()

    async def child(ctx: ChildContext) -> None:
        starts[ctx.name] += 1
        if gate["crash"]:
            raise RuntimeError("boom")
        ctx.ready()
        await ctx.shutdown.wait()

    sup.add("a", child)
    async with sup:
        await until(lambda: sup.snapshot()["a"]["state"] == "backing_off")
        assert sup.snapshot()["a"]["attempt"] == 1
        gate["crash"] = False
        await sup.restart("a")  # no 30 s wait
        info = sup.snapshot()["a"]
        assert (info["state"], info["attempt"], info["next_restart_at"]) == ("running", 0, None)
        assert starts["a"] == 2
        await asyncio.sleep(0.05)
        assert starts["a"] == 2  # the cancelled schedule did not start a second copy
        assert metrics.counters.service_restarts_total.get("a") == 0


async def test_restart_of_a_quarantined_child_releases_it_with_a_clean_record():
    sup, _, metrics = make(restart_cap=1)
    runs = Runs()
    sup.add("a", runs.crashing())
    async with sup:
        await until(lambda: sup.snapshot()["a"]["state"] == "quarantined")
        assert metrics.counters.supervisor_quarantined.get("a") == 1
        await sup.restart("a")
        assert metrics.counters.supervisor_quarantined.get("a") == 0
        assert "quarantined:a" not in metrics.health.missing()
        assert runs.starts["a"] >= 3  # it crashes again, so it goes back to its loop


async def test_restart_refuses_unknown_names_a_stopped_supervisor_and_a_second_caller():
    sup, _, _ = make()
    gate, asked = asyncio.Event(), asyncio.Event()

    async def slow_to_stop(ctx: ChildContext) -> None:
        await ctx.shutdown.wait()
        asked.set()
        await gate.wait()

    sup.add("slow", slow_to_stop, shutdown_timeout=5.0)
    with pytest.raises(RuntimeError, match="not running"):
        await sup.restart("slow")
    with pytest.raises(KeyError, match="'nope'"):
        await sup.restart("nope")
    async with sup:
        first = asyncio.ensure_future(sup.restart("slow"))
        await asyncio.wait_for(asked.wait(), 5.0)  # the first restart is draining it
        with pytest.raises(RuntimeError, match="already being restarted"):
            await sup.restart("slow")
        gate.set()
        await first
        assert sup.snapshot()["slow"]["state"] == "running"


async def test_a_shutdown_during_a_restart_does_not_start_the_child_again():
    sup, _, _ = make()
    runs = Runs()
    sup.add("a", runs.healthy())
    await sup.start()
    await until(lambda: runs.starts["a"] == 1)
    restarting = asyncio.ensure_future(sup.restart("a"))
    await asyncio.sleep(0)
    await sup.shutdown()
    await restarting
    assert runs.starts["a"] == 1
    assert sup.snapshot()["a"]["state"] == "stopped"


async def test_child_supervisor_finds_nested_supervisors():
    outer, _, _ = make()
    inner = Supervisor(name="inner")
    runs = Runs()
    inner.add("leaf", runs.healthy())
    outer.add("inner", inner)
    outer.add("plain", runs.healthy())
    assert outer.child_supervisor("inner") is inner
    assert outer.child_supervisor("plain") is None
    with pytest.raises(KeyError):
        outer.child_supervisor("nope")
    async with outer:
        await until(lambda: runs.starts["leaf"] == 1)
        await inner.restart("leaf")
        assert runs.starts["leaf"] == 2
