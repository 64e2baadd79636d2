"""Supervisor behaviour on a real event loop: restarts, strategies, quarantine, shutdown."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from ron_kernel import Bus, HealthState, KernelEvent, Metrics
from ron_kernel.supervisor import ABANDON_GRACE, ChildContext, Supervisor

FAST = {"min_backoff": 0.001, "max_backoff": 0.004}


def make(**kw: Any) -> tuple[Supervisor, Bus[KernelEvent], Metrics]:
    bus: Bus[KernelEvent] = Bus()
    metrics = Metrics()
    kw = {**FAST, **kw}
    return Supervisor(bus=bus, metrics=metrics, **kw), bus, metrics


async def until(cond, within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.002)


class Runs:
    """Counts starts per child name."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.stopped: Counter[str] = Counter()

    def crasher(self, exc: BaseException | None = None, after: float = 0.0):
        async def child(ctx: ChildContext) -> None:
            self.count[ctx.name] += 1
            if after:
                await asyncio.sleep(after)
            if exc is not None:
                raise exc

        return child

    def healthy(self):
        async def child(ctx: ChildContext) -> None:
            self.count[ctx.name] += 1
            ctx.ready()
            await ctx.shutdown.wait()
            self.stopped[ctx.name] += 1

        return child


# ---------------------------------------------------------------- crash, restart, quarantine


async def test_always_crashing_child_runs_cap_plus_one_times_then_is_quarantined():
    sup, bus, metrics = make(restart_cap=3)
    rx = bus.subscribe()
    runs = Runs()
    sup.add("svc", runs.crasher(ValueError("boom")))
    await sup.start()
    await until(lambda: sup.snapshot()["svc"]["state"] == "quarantined")
    await asyncio.sleep(0.03)  # nothing more happens once quarantined
    assert runs.count["svc"] == 4
    events = rx.try_recv_many()
    crashed = [e for e in events if isinstance(e, KernelEvent.ServiceCrashed)]
    boom = KernelEvent.ServiceCrashed(service="svc", reason="panic: ValueError: boom")
    assert crashed == [boom] * 4
    assert KernelEvent.Health(service="svc", ok=False) in events
    k = metrics.counters
    assert k.service_restarts_total.get("svc") == 3
    assert k.backoff_retries_total.get("restart") == 3
    assert k.tasks_spawned_total.get("child") == 4
    assert k.supervisor_quarantined.get("svc") == 1.0
    assert "quarantined:svc" in metrics.health.snapshot()["missing"]
    info = sup.snapshot()["svc"]
    assert info["restarts"] == 3 and info["restarts_in_window"] == 3
    assert info["last_reason"] == "panic: ValueError: boom"
    assert "ValueError: boom" in info["last_traceback"]
    assert info["uptime"] is None and info["next_restart_at"] is None
    await sup.shutdown(1)


async def test_crash_is_published_before_the_restart_and_not_ready_in_between():
    health = HealthState()
    bus: Bus[KernelEvent] = Bus()
    rx = bus.subscribe()
    sup = Supervisor(bus=bus, health=health, min_backoff=0.05, max_backoff=0.05)
    fail = asyncio.Event()

    async def child(ctx: ChildContext) -> None:
        ctx.ready()
        await fail.wait()
        fail.clear()
        raise KeyError("k")

    sup.add("svc", child)
    await sup.start()
    await until(lambda: health.snapshot()["services"].get("svc") is True)
    fail.set()
    event = await asyncio.wait_for(rx.recv(), 1)
    assert event == KernelEvent.ServiceCrashed(service="svc", reason="panic: KeyError: 'k'")
    assert health.snapshot()["services"]["svc"] is False
    info = sup.snapshot()["svc"]
    assert info["state"] == "backing_off" and info["next_restart_at"] is not None
    await until(lambda: health.snapshot()["services"]["svc"] is True)
    await sup.shutdown(1)


async def test_permanent_child_returning_is_a_crash_with_reason_exited():
    sup, bus, _ = make(restart_cap=2)
    rx = bus.subscribe()
    runs = Runs()
    sup.add("svc", runs.crasher(None))
    await sup.start()
    await until(lambda: sup.snapshot()["svc"]["state"] == "quarantined")
    assert runs.count["svc"] == 3
    assert rx.try_recv() == KernelEvent.ServiceCrashed(service="svc", reason="exited")
    await sup.shutdown(1)


async def test_transient_child_is_restarted_after_an_exception_only():
    sup, bus, metrics = make(restart_cap=5)
    rx = bus.subscribe()
    calls = 0

    async def child(ctx: ChildContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk")

    sup.add("svc", child, restart="transient")
    await sup.start()
    await until(lambda: sup.snapshot()["svc"]["state"] == "stopped" and calls == 2)
    await asyncio.sleep(0.02)
    assert calls == 2
    assert metrics.counters.service_restarts_total.get("svc") == 1
    disk = KernelEvent.ServiceCrashed(service="svc", reason="panic: OSError: disk")
    assert rx.try_recv_many() == [disk]
    await sup.shutdown(1)


async def test_temporary_child_is_never_restarted_but_its_crash_is_published():
    sup, bus, metrics = make()
    rx = bus.subscribe()
    runs = Runs()
    sup.add("svc", runs.crasher(ValueError("once")), restart="temporary")
    await sup.start()
    await until(lambda: sup.snapshot()["svc"]["state"] == "stopped" and runs.count["svc"] == 1)
    await asyncio.sleep(0.02)
    assert runs.count["svc"] == 1
    once = KernelEvent.ServiceCrashed(service="svc", reason="panic: ValueError: once")
    assert rx.try_recv_many() == [once]
    assert metrics.counters.service_restarts_total.get("svc") == 0
    await sup.shutdown(1)


async def test_fatal_exception_quarantines_at_once_and_release_restarts_cleanly():
    sup, bus, metrics = make(restart_cap=5)
    rx = bus.subscribe()
    runs = Runs()
    sup.add("svc", runs.crasher(PermissionError("no")), fatal=(PermissionError,))
    await sup.start()
    await until(lambda: sup.snapshot()["svc"]["state"] == "quarantined")
    assert runs.count["svc"] == 1
    assert metrics.counters.service_restarts_total.get("svc") == 0
    assert rx.try_recv_many()[-1] == KernelEvent.Health(service="svc", ok=False)
    assert sup.release("svc") is True
    assert "quarantined:svc" not in metrics.health.snapshot()["missing"]
    assert metrics.counters.supervisor_quarantined.get("svc") == 0.0
    await until(lambda: sup.snapshot()["svc"]["state"] == "quarantined" and runs.count["svc"] == 2)
    with pytest.raises(KeyError, match="no child named 'nope'"):
        sup.release("nope")
    await sup.shutdown(1)


async def test_release_clears_the_window_so_the_child_gets_cap_restarts_again():
    sup, _, _ = make(restart_cap=2)
    runs = Runs()
    sup.add("svc", runs.crasher(ValueError("x")))
    await sup.start()
    await until(lambda: sup.snapshot()["svc"]["state"] == "quarantined")
    assert runs.count["svc"] == 3
    assert sup.release("svc") is True
    assert sup.release("svc") is False  # already out of quarantine
    await until(lambda: sup.snapshot()["svc"]["state"] == "quarantined" and runs.count["svc"] == 6)
    assert sup.snapshot()["svc"]["restarts"] == 4
    await sup.shutdown(1)


async def test_reset_after_restarts_the_backoff_attempt_counter():
    sup, _, _ = make(restart_cap=100, reset_after=0.03)
    calls = 0

    async def child(ctx: ChildContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            await asyncio.sleep(0.06)  # stays up longer than reset_after
        if calls <= 4:
            raise ValueError("x")
        await ctx.shutdown.wait()

    sup.add("svc", child)
    await sup.start()
    await until(lambda: calls == 5)
    assert sup.snapshot()["svc"]["attempt"] == 1  # 3 before, reset to 0 by the long run, +1
    await sup.shutdown(1)


# ---------------------------------------------------------------- strategies


class UpperRandom(random.Random):
    """Always draws the top of the jitter range (the longest backoff)."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_one_for_one_a_childs_backoff_never_delays_another_restart():
    sup, _, _ = make(min_backoff=0.01, max_backoff=5.0, restart_cap=100, rng=UpperRandom())
    runs = Runs()
    fail_b = asyncio.Event()

    async def b(ctx: ChildContext) -> None:
        runs.count["b"] += 1
        if runs.count["b"] == 1:
            await fail_b.wait()
            raise ValueError("b")
        await ctx.shutdown.wait()

    sup.add("a", runs.crasher(ValueError("a")))
    sup.add("b", b)
    await sup.start()
    # The crash is handled by the task's done-callback one loop step after the child raised,
    # so wait for the state, not only the run count. a's next backoff is 0.32 s.
    await until(lambda: runs.count["a"] == 6 and sup.snapshot()["a"]["state"] == "backing_off")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    fail_b.set()
    await until(lambda: runs.count["b"] == 2, within=0.25)
    assert loop.time() - t0 < 0.25
    assert sup.snapshot()["a"]["state"] == "backing_off"
    assert runs.count["a"] == 6
    await sup.shutdown(1)


async def _strategy_run(strategy: str) -> tuple[Runs, Metrics]:
    sup, _, metrics = make(strategy=strategy, restart_cap=5)
    runs = Runs()
    fail = asyncio.Event()

    async def b(ctx: ChildContext) -> None:
        runs.count["b"] += 1
        if runs.count["b"] == 1:
            await fail.wait()
            raise ValueError("b")
        await ctx.shutdown.wait()

    sup.add("a", runs.healthy())
    sup.add("b", b)
    sup.add("c", runs.healthy())
    await sup.start()
    await until(lambda: sum(runs.count.values()) == 3)
    fail.set()
    await until(lambda: runs.count["b"] == 2)
    await until(lambda: all(v["state"] == "running" for v in sup.snapshot().values()))
    await sup.shutdown(1)
    return runs, metrics


async def test_one_for_all_restarts_every_child_with_the_crashed_one():
    runs, metrics = await _strategy_run("one_for_all")
    assert runs.count == Counter(a=2, b=2, c=2)
    assert runs.stopped["a"] == 2 and runs.stopped["c"] == 2  # drained once by the strategy
    assert metrics.counters.service_restarts_total.get("b") == 1
    assert metrics.counters.service_restarts_total.get("a") == 0


async def test_rest_for_one_restarts_the_children_added_after_the_crashed_one():
    runs, metrics = await _strategy_run("rest_for_one")
    assert runs.count == Counter(a=1, b=2, c=2)
    assert metrics.counters.service_restarts_total.get("b") == 1


async def test_one_for_one_restarts_only_the_crashed_child():
    runs, _ = await _strategy_run("one_for_one")
    assert runs.count == Counter(a=1, b=2, c=1)


async def test_one_for_all_sibling_that_ignores_shutdown_is_cancelled_then_restarted():
    sup, _, metrics = make(strategy="one_for_all")
    runs = Runs()

    async def stubborn(ctx: ChildContext) -> None:
        runs.count["s"] += 1
        await asyncio.sleep(3600)

    fail = asyncio.Event()

    async def b(ctx: ChildContext) -> None:
        runs.count["b"] += 1
        if runs.count["b"] == 1:
            await fail.wait()
            raise ValueError("b")
        await ctx.shutdown.wait()

    sup.add("s", stubborn, shutdown_timeout=0.02)
    sup.add("b", b)
    await sup.start()
    await until(lambda: runs.count["b"] == 1)
    fail.set()
    await until(lambda: runs.count["s"] == 2 and runs.count["b"] == 2)
    assert metrics.counters.tasks_aborted_total.get("child") == 1
    await sup.shutdown(0.05)


# ---------------------------------------------------------------- nested supervisors


async def test_nested_supervisor_restarts_inside_and_drains_on_parent_shutdown():
    bus: Bus[KernelEvent] = Bus()
    rx = bus.subscribe()
    metrics = Metrics()
    parent = Supervisor(name="root", bus=bus, metrics=metrics, **FAST)
    inner = Supervisor(name="inner", restart_cap=2, **FAST)
    runs = Runs()
    inner.add("leaf-ok", runs.healthy())
    inner.add("leaf-bad", runs.crasher(ValueError("leaf")))
    parent.add("top", runs.healthy())
    parent.add("inner", inner)
    await parent.start()
    await until(lambda: inner.snapshot()["leaf-bad"]["state"] == "quarantined")
    assert runs.count["leaf-bad"] == 3 and runs.count["leaf-ok"] == 1
    assert parent.snapshot()["inner"]["state"] == "running"
    events = rx.try_recv_many()  # the inner supervisor inherited the parent's bus
    leaf = KernelEvent.ServiceCrashed(service="leaf-bad", reason="panic: ValueError: leaf")
    assert leaf in events
    await parent.shutdown(1)
    assert runs.stopped["leaf-ok"] == 1 and runs.stopped["top"] == 1
    assert inner.snapshot()["leaf-ok"]["state"] == "stopped"
    assert parent.snapshot()["inner"]["state"] == "stopped"
    assert metrics.counters.tasks_aborted_total.total() == 0


# ---------------------------------------------------------------- shutdown


async def test_shutdown_cancels_a_child_that_ignores_the_shutdown_event():
    sup, _, metrics = make()
    cancelled = asyncio.Event()

    async def deaf(ctx: ChildContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    sup.add("deaf", deaf, shutdown_timeout=0.05)
    await sup.start()
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await sup.shutdown(1)
    elapsed = loop.time() - t0
    assert cancelled.is_set()
    assert 0.04 <= elapsed < 0.05 + ABANDON_GRACE + 0.2
    assert metrics.counters.tasks_aborted_total.get("child") == 1
    assert sup.snapshot()["deaf"]["state"] == "stopped"


async def test_shutdown_abandons_a_child_that_swallows_cancellation_within_deadline_plus_grace():
    sup, _, metrics = make()

    async def stubborn(ctx: ChildContext) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    sup.add("stubborn", stubborn)
    sup.add("polite", Runs().healthy())
    await sup.start()
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await sup.shutdown(0.05)
    elapsed = loop.time() - t0
    assert elapsed < 0.05 + ABANDON_GRACE + 0.2
    k = metrics.counters
    assert k.tasks_aborted_total.get("child") == 1
    assert k.tasks_aborted_total.get("abandoned") == 1
    assert {v["state"] for v in sup.snapshot().values()} == {"stopped"}


async def test_shutdown_is_idempotent_and_no_restart_happens_during_it():
    sup, _, metrics = make()

    async def dies_on_shutdown(ctx: ChildContext) -> None:
        await ctx.shutdown.wait()
        raise RuntimeError("bye")

    sup.add("svc", dies_on_shutdown)
    sup.add("other", Runs().healthy())
    await sup.start()
    await asyncio.sleep(0.01)
    await asyncio.gather(sup.shutdown(1), sup.shutdown(1))
    await sup.shutdown(1)
    await asyncio.sleep(0.02)
    assert metrics.counters.tasks_spawned_total.get("child") == 2
    assert metrics.counters.service_restarts_total.get("svc") == 0
    assert sup.snapshot()["svc"]["state"] == "stopped"


async def test_shutdown_cancels_pending_restarts():
    sup, _, _ = make(min_backoff=5.0, max_backoff=5.0)
    sup.add("svc", Runs().crasher(ValueError("x")))
    await sup.start()
    await until(lambda: sup.snapshot()["svc"]["state"] == "backing_off")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await sup.shutdown(1)
    assert loop.time() - t0 < 0.5
    assert sup.snapshot()["svc"]["state"] == "stopped"


async def test_stragglers_are_cancelled_in_reverse_start_order():
    sup, _, _ = make()
    order: list[str] = []

    def deaf(name: str):
        async def run(ctx: ChildContext) -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                order.append(name)
                raise
        return run

    for name in ("first", "second", "third"):
        sup.add(name, deaf(name))
    await sup.start()
    await asyncio.sleep(0.01)
    await sup.shutdown(0.03)
    assert order == ["third", "second", "first"]
    assert list(sup.snapshot()) == ["first", "second", "third"]


async def test_context_manager_starts_and_drains():
    runs = Runs()
    async with Supervisor(**FAST) as sup:
        sup.add("svc", runs.healthy())
        await until(lambda: runs.count["svc"] == 1)
    assert runs.stopped["svc"] == 1


# ---------------------------------------------------------------- context, config, snapshot


async def test_ctx_config_reads_the_current_snapshot_on_every_access():
    current = {"v": 1}
    sup = Supervisor(config=lambda: current["v"], **FAST)
    seen: list[Any] = []
    go = asyncio.Event()

    async def child(ctx: ChildContext) -> None:
        seen.append(ctx.config)
        await go.wait()
        seen.append(ctx.config)
        assert ctx.time_left() is None
        await ctx.shutdown.wait()
        seen.append(ctx.time_left())

    sup.add("svc", child)
    await sup.start()
    await until(lambda: len(seen) == 1)
    current["v"] = 2
    go.set()
    await until(lambda: len(seen) == 2)
    await sup.shutdown(1)
    assert seen[:2] == [1, 2]
    assert 0 < seen[2] <= 1


async def test_snapshot_is_json_serialisable_with_uptime_while_running():
    sup, _, _ = make(min_backoff=1.0, max_backoff=1.0)
    sup.add("ok", Runs().healthy(), restart="transient")
    sup.add("bad", Runs().crasher(ValueError("x")))
    await sup.start()
    await until(lambda: sup.snapshot()["bad"]["state"] == "backing_off")
    snap = json.loads(json.dumps(sup.snapshot()))
    assert snap["ok"]["state"] == "running" and snap["ok"]["uptime"] >= 0
    assert snap["ok"]["restart"] == "transient"
    assert snap["bad"]["next_restart_at"] > 0 and snap["bad"]["uptime"] is None
    await sup.shutdown(1)


async def test_from_config_reads_the_supervisor_keys():
    cfg = SimpleNamespace(
        supervisor=SimpleNamespace(min_backoff=timedelta(milliseconds=1),
                                   max_backoff=timedelta(milliseconds=2), restart_cap=1,
                                   restart_window=timedelta(seconds=60)),
        shutdown=SimpleNamespace(drain_deadline=timedelta(seconds=2)))
    sup = Supervisor.from_config(cfg, metrics=Metrics())
    seen: list[Any] = []
    runs = Runs()

    async def child(ctx: ChildContext) -> None:
        seen.append(ctx.config)
        await runs.crasher(ValueError("x"))(ctx)

    sup.add("svc", child)
    await sup.start()
    await until(lambda: sup.snapshot()["svc"]["state"] == "quarantined")
    assert runs.count["svc"] == 2  # restart_cap=1 from the config
    assert seen[0] is cfg
    assert sup._drain_deadline == 2.0
    assert Supervisor.from_config(cfg, restart_cap=4)._restart_cap == 4
    await sup.shutdown()


def test_from_config_with_the_real_config_when_available():
    import ron_kernel

    config_cls = getattr(ron_kernel, "Config", None)
    cfg = config_cls() if config_cls is not None else SimpleNamespace(
        supervisor=SimpleNamespace(min_backoff=timedelta(milliseconds=100),
                                   max_backoff=timedelta(seconds=30), restart_cap=5,
                                   restart_window=timedelta(seconds=60)))
    sup = Supervisor.from_config(cfg)
    assert sup._min_backoff == cfg.supervisor.min_backoff.total_seconds()
    assert sup._restart_cap == cfg.supervisor.restart_cap


# ---------------------------------------------------------------- bad input


async def _async_child(ctx: ChildContext) -> None:
    await ctx.shutdown.wait()


def test_add_rejects_bad_input_at_add_time():
    sup = Supervisor()
    with pytest.raises(TypeError, match="must be a callable taking a ChildContext"):
        sup.add("sync", 42)  # type: ignore[arg-type]
    sup.add("svc", _async_child)
    with pytest.raises(ValueError, match="duplicate child name 'svc'"):
        sup.add("svc", _async_child)
    with pytest.raises(ValueError, match="restart for child 'x' must be one of"):
        sup.add("x", _async_child, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown_timeout of child 'x' must be >= 0"):
        sup.add("x", _async_child, shutdown_timeout=-1)
    with pytest.raises(TypeError, match="fatal for child 'x' must hold exception types"):
        sup.add("x", _async_child, fatal=("ValueError",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot supervise itself"):
        sup.add("self", sup)
    with pytest.raises(ValueError, match="non-empty str"):
        sup.add("", _async_child)
    sup.add("nested", Supervisor(name="nested"))
    sup.add("single-fatal", _async_child, fatal=KeyError)
    assert list(sup.snapshot()) == ["svc", "nested", "single-fatal"]


def test_constructor_rejects_bad_values():
    with pytest.raises(ValueError, match="strategy must be one of"):
        Supervisor(strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_backoff"):
        Supervisor(min_backoff=2.0, max_backoff=1.0)
    with pytest.raises(ValueError, match="restart_cap must be >= 1"):
        Supervisor(restart_cap=0)
    with pytest.raises(TypeError, match="restart_cap must be an int"):
        Supervisor(restart_cap=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="restart_window must be >= 0"):
        Supervisor(restart_window=timedelta(seconds=-1))
    with pytest.raises(TypeError, match="reset_after must be"):
        Supervisor(reset_after="10s")  # type: ignore[arg-type]


async def test_a_lambda_or_partial_returning_a_coroutine_is_a_child():
    import functools

    async def worker(ctx: ChildContext, tag: str) -> None:
        ctx.ready()
        await ctx.shutdown.wait()

    sup = Supervisor()
    sup.add("lambda", lambda ctx: worker(ctx, "a"))
    sup.add("partial", functools.partial(worker, tag="b"))
    async with sup:
        for _ in range(200):
            if all(i["state"] == "running" for i in sup.snapshot().values()):
                break
            await asyncio.sleep(0.005)
        assert {i["state"] for i in sup.snapshot().values()} == {"running"}


async def test_a_child_returning_no_awaitable_is_quarantined_at_once_with_a_clear_reason():
    sup = Supervisor(min_backoff=0)
    sup.add("sync", lambda ctx: None)  # type: ignore[arg-type,return-value]
    async with sup:
        for _ in range(200):
            if sup.snapshot()["sync"]["state"] == "quarantined":
                break
            await asyncio.sleep(0.005)
        info = sup.snapshot()["sync"]
    assert info["state"] == "quarantined" and info["restarts"] == 0
    assert "returned NoneType, not an awaitable" in (info["last_reason"] or "")
