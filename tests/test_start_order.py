"""depends_on: start after dependencies are ready, stop before them, cycles refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from ron_kernel import HealthState, Metrics
from ron_kernel.supervisor import ChildContext, Supervisor


async def _until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def _recording(log: list[str], name: str, ready_after: float = 0.0) -> Callable[..., object]:
    async def child(ctx: ChildContext) -> None:
        log.append(f"start {name}")
        if ready_after:
            await ctx.sleep(ready_after)
        ctx.ready()
        await ctx.shutdown.wait()
        log.append(f"stop {name}")

    return child


async def test_a_child_starts_only_once_its_dependencies_are_ready():
    log: list[str] = []
    health = HealthState()
    sup = Supervisor(metrics=Metrics(health=health))
    sup.add("api", _recording(log, "api"), depends_on=("db", "cache"))
    sup.add("db", _recording(log, "db", ready_after=0.05))
    sup.add("cache", _recording(log, "cache", ready_after=0.02))
    async with sup:
        await _until(lambda: "start api" in log)
        assert log.index("start api") > max(log.index("start db"), log.index("start cache"))
        assert sup.snapshot()["api"]["depends_on"] == ["db", "cache"]
    assert log.index("stop api") < min(log.index("stop db"), log.index("stop cache"))


async def test_a_waiting_child_shows_waiting_until_its_dependency_is_ready():
    release = asyncio.Event()

    async def slow_db(ctx: ChildContext) -> None:
        await ctx.wait(release.wait())
        ctx.ready()
        await ctx.shutdown.wait()

    log: list[str] = []
    sup = Supervisor(metrics=Metrics())
    sup.add("db", slow_db)
    sup.add("api", _recording(log, "api"), depends_on="db")
    async with sup:
        await asyncio.sleep(0.05)
        assert sup.snapshot()["api"]["state"] == "waiting" and log == []
        release.set()
        await _until(lambda: log == ["start api"])


async def test_shutdown_stops_the_deepest_dependents_first():
    log: list[str] = []
    sup = Supervisor()
    sup.add("db", _recording(log, "db"))
    sup.add("index", _recording(log, "index"), depends_on=["db"])
    sup.add("api", _recording(log, "api"), depends_on=["index"])
    async with sup:
        await _until(lambda: len(log) == 3)
    assert [e for e in log if e.startswith("stop")] == ["stop api", "stop index", "stop db"]


def test_a_cycle_is_refused_at_add_naming_it():
    sup = Supervisor()
    sup.add("a", _recording([], "a"), depends_on=["b"])
    sup.add("b", _recording([], "b"), depends_on=["c"])
    with pytest.raises(ValueError, match="a -> b -> c -> a"):
        sup.add("c", _recording([], "c"), depends_on=["a"])
    with pytest.raises(ValueError, match="cannot depend on itself"):
        sup.add("d", _recording([], "d"), depends_on=["d"])


async def test_an_unknown_dependency_is_refused_at_start_naming_it():
    sup = Supervisor()
    sup.add("api", _recording([], "api"), depends_on=["dbb"])
    sup.add("db", _recording([], "db"))
    with pytest.raises(ValueError, match=r"unknown child.*'dbb'.*known: api, db"):
        await sup.start()
    assert sup.snapshot()["db"]["state"] == "stopped"  # nothing started


async def test_a_crashed_dependency_is_seen_not_ready_and_dependents_keep_running():
    crash = asyncio.Event()
    seen: list[bool] = []

    async def db(ctx: ChildContext) -> None:
        ctx.ready()
        await ctx.wait(crash.wait())
        raise RuntimeError("db down")

    async def api(ctx: ChildContext) -> None:
        ctx.ready()
        while await ctx.sleep(0.01):
            seen.append(ctx.dependencies_ready())

    health = HealthState()
    sup = Supervisor(metrics=Metrics(health=health), min_backoff=0.2, max_backoff=0.2)
    sup.add("db", db)
    sup.add("api", api, depends_on=["db"])
    async with sup:
        await _until(lambda: len(seen) > 2)
        crash.set()
        await _until(lambda: seen[-1] is False)
        assert sup.snapshot()["api"]["state"] == "running"
        assert sup.snapshot()["api"]["restarts"] == 0
