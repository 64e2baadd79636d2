"""Chaos: restart storms against the window law, and children that will not die."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from ron_kernel import Bus, KernelEvent, Metrics
from ron_kernel._supervisor_policy import RestartWindow, backoff_ceiling
from ron_kernel.supervisor import ABANDON_GRACE, ChildContext, Supervisor

MIN_B, MAX_B = 0.002, 0.008
CAP, WINDOW = 3, 0.2


def law(crash_times: list[float]) -> int | None:
    """Index of the crash the window law quarantines, or None."""
    window = RestartWindow(CAP, WINDOW)
    for i, t in enumerate(crash_times):
        if not window.admit(t):
            return i
    return None


async def test_restart_storm_respects_cap_jitter_and_quarantines_exactly_per_the_law():
    # The spec's storm (a crash every 250 ms, 500 ms, 1 s) scaled down 10x, window 200 ms.
    loop = asyncio.get_running_loop()
    bus: Bus[KernelEvent] = Bus()
    rx = bus.subscribe()
    metrics = Metrics()
    sup = Supervisor(bus=bus, metrics=metrics, min_backoff=MIN_B, max_backoff=MAX_B,
                     restart_cap=CAP, restart_window=WINDOW, reset_after=10.0)
    periods = {"every-25ms": 0.025, "every-50ms": 0.05, "every-100ms": 0.1}
    starts: dict[str, list[float]] = {name: [] for name in periods}
    crashes: dict[str, list[float]] = {name: [] for name in periods}

    def storm(name: str, period: float):
        async def child(ctx: ChildContext) -> None:
            starts[name].append(loop.time())
            await asyncio.sleep(period)
            crashes[name].append(loop.time())
            raise RuntimeError(f"storm {name}")
        return child

    for name, period in periods.items():
        sup.add(name, storm(name, period))
    await sup.start()
    await asyncio.sleep(0.75)
    # Snapshot and events are read in the same loop step: together they show every crash the
    # supervisor has handled (a crash raised in this very step is handled after it).
    snap = sup.snapshot()
    events = rx.try_recv_many()
    handled = {name: sum(1 for e in events if e == KernelEvent.ServiceCrashed(
        service=name, reason=f"panic: RuntimeError: storm {name}")) for name in periods}
    await sup.shutdown(0.2)

    for name in periods:
        assert len(crashes[name]) - handled[name] in (0, 1)
        times = crashes[name][:handled[name]]
        verdict = law(times)
        info = snap[name]
        if verdict is None:
            assert info["state"] != "quarantined", (name, times)
        else:
            assert info["state"] == "quarantined", (name, times)
            assert len(times) == verdict + 1  # nothing ran after the quarantining crash
        assert info["restarts_in_window"] <= CAP
        # jitter: every restart waited at least the floor, and never far past its ceiling
        for attempt, (crash, restart) in enumerate(zip(times, starts[name][1:], strict=False)):
            waited = restart - crash
            assert waited >= MIN_B * 0.99, (name, attempt, waited)
            assert waited <= backoff_ceiling(attempt, MIN_B, MAX_B) + 0.1, (name, attempt, waited)
        # a restart is counted when spawned; its first step may still be pending
        assert len(starts[name]) - 1 <= info["restarts"] <= len(starts[name])
    # the fastest storm must be caught, the slowest must not be (restarts > 200 ms / 3 apart)
    assert snap["every-25ms"]["state"] == "quarantined"
    assert snap["every-100ms"]["state"] != "quarantined"
    assert KernelEvent.Health(service="every-25ms", ok=False) in events
    assert "quarantined:every-25ms" in metrics.health.snapshot()["missing"]


async def test_readiness_degrades_on_quarantine_and_recovers_on_release():
    metrics = Metrics()
    sup = Supervisor(metrics=metrics, min_backoff=0.001, max_backoff=0.002, restart_cap=1)
    broken = True

    async def child(ctx: ChildContext) -> None:
        if broken:
            raise ValueError("broken")
        ctx.ready()
        await ctx.shutdown.wait()

    sup.add("svc", child)
    await sup.start()
    loop = asyncio.get_running_loop()
    end = loop.time() + 2
    while sup.snapshot()["svc"]["state"] != "quarantined":
        assert loop.time() < end
        await asyncio.sleep(0.002)
    assert metrics.health.all_ready() is False
    assert "quarantined:svc" in metrics.health.snapshot()["missing"]
    broken = False
    assert sup.release("svc")
    while not metrics.health.all_ready():
        assert loop.time() < end
        await asyncio.sleep(0.002)
    assert metrics.health.snapshot()["missing"] == []
    await sup.shutdown(1)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_child_that_swallows_even_generator_exit_is_abandoned_in_bounded_time():
    metrics = Metrics()
    sup = Supervisor(metrics=metrics)

    async def zombie(ctx: ChildContext) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except BaseException:
                pass

    sup.add("zombie", zombie, shutdown_timeout=0.01)
    await sup.start()
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await sup.shutdown(0.05)
    assert loop.time() - t0 < 0.05 + ABANDON_GRACE + 0.2
    assert metrics.counters.tasks_aborted_total.get("abandoned") == 1
    # no longer a task asyncio.run would wait for
    assert all("zombie" not in t.get_name() for t in asyncio.all_tasks())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_python_without_unregister_task_is_reported_loudly(monkeypatch):
    from ron_kernel import _supervisor

    unregister = asyncio.tasks._unregister_task
    monkeypatch.delattr(asyncio.tasks, "_unregister_task")
    monkeypatch.setattr(_supervisor, "_warned_no_unregister", False)
    sup = Supervisor()

    async def zombie(ctx: ChildContext) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except BaseException:
                pass

    sup.add("zombie", zombie, shutdown_timeout=0.01)
    await sup.start()
    await asyncio.sleep(0.01)
    with pytest.warns(RuntimeWarning, match="_unregister_task is missing"):
        await sup.shutdown(0.05)
    for task in [t for t in asyncio.all_tasks() if "zombie" in t.get_name()]:
        unregister(task)  # whatever still runs must not hold this test's loop open


SCRIPT = textwrap.dedent("""
    import asyncio, sys, time
    from ron_kernel.supervisor import Supervisor

    async def polite(ctx):
        await ctx.shutdown.wait()

    async def swallow_cancel(ctx):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    async def swallow_everything(ctx):
        while True:
            try:
                await asyncio.sleep(3600)
            except BaseException:
                pass

    async def main():
        sup = Supervisor()
        sup.add("polite", polite)
        sup.add("swallow-cancel", swallow_cancel)
        sup.add("swallow-everything", swallow_everything)
        await sup.start()
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        await sup.shutdown(0.1)
        print("shutdown_s", round(time.monotonic() - t0, 3), flush=True)

    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    print("exited", flush=True)
""")


@pytest.mark.parametrize("flavor", ["asyncio", "uvloop"])
def test_abandoned_children_do_not_keep_the_process_alive(flavor):
    # Liveness, not performance: without abandonment asyncio.run would wait forever.
    proc = subprocess.run([sys.executable, "-c", SCRIPT, flavor], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert "exited" in lines
    shutdown_s = float(next(line for line in lines if line.startswith("shutdown_s")).split()[1])
    assert shutdown_s < 0.1 + ABANDON_GRACE + 0.5
