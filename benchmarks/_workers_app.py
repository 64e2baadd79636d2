"""The apps ``benchmarks.workers`` runs, in worker processes or in its own process.

Each function is an app factory (what ``ron-kernel run --app`` and ``supervise_workers`` take);
worker processes import this module by name (``benchmarks._workers_app:cpu``), so the rig runs
from the repository root. The knobs come from the app config (:class:`RigKnobs`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from ron_kernel import Config, KernelEvent
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ChildContext


@dataclass(frozen=True)
class RigKnobs:
    """``[app]`` of the rig's apps."""

    rate: int = 50_000  # events per second the ``events`` app publishes
    unit: int = 20_000  # loop iterations of one CPU work unit
    series: int = 2_000  # series the ``series`` app registers
    tick: float = 0.005  # seconds between the ``events`` app's bursts


Ctx = ChildContext[Config[RigKnobs]]


def work_unit(n: int) -> int:
    """One pure-Python unit of CPU work (no I/O, holds the GIL throughout)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def cpu(kernel: Kernel[RigKnobs]) -> None:
    """A child that does work units back to back, counted in ``rig_units_total``."""
    units = Counter("rig_units", "CPU work units done", registry=kernel.metrics.registry)

    async def worker(ctx: Ctx) -> None:
        size = ctx.config.app.unit
        ctx.ready()
        while not ctx.shutdown.is_set():
            work_unit(size)
            units.inc()
            await asyncio.sleep(0)  # heartbeats, scrapes and shutdown get their turn

    kernel.supervise("cpu", worker)


def events(kernel: Kernel[RigKnobs]) -> None:
    """A child that publishes ``rate`` Health events per second, in bursts every ``tick``."""

    async def publisher(ctx: Ctx) -> None:
        knobs = ctx.config.app
        per_tick = max(1, round(knobs.rate * knobs.tick))
        names = [f"e{n}" for n in range(8)]
        bus = ctx.bus
        ctx.ready()
        loop = asyncio.get_running_loop()
        due = loop.time()
        sent = 0
        while not ctx.shutdown.is_set():
            for n in range(per_tick):
                bus.publish(KernelEvent.Health(service=names[n & 7], ok=(sent + n) & 1 == 0))
            sent += per_tick
            due += knobs.tick
            delay = due - loop.time()
            if delay > 0:
                await ctx.sleep(delay)
            else:
                await asyncio.sleep(0)

    kernel.supervise("publisher", publisher)


def series(kernel: Kernel[RigKnobs]) -> None:
    """``series`` gauge series on the kernel's registry, and one idle child."""
    gauge = Gauge("rig_series", "Many series", ["n"], registry=kernel.metrics.registry)
    for n in range(kernel.config.app.series):
        gauge.labels(n=str(n)).set(n)

    async def idle(ctx: Ctx) -> None:
        ctx.ready()
        await ctx.shutdown.wait()

    kernel.supervise("idle", idle)


def ok(kernel: Kernel[RigKnobs]) -> None:
    """One idle child (crash latency: the worker is what gets killed)."""

    async def idle(ctx: Ctx) -> None:
        ctx.ready()
        await ctx.shutdown.wait()

    kernel.supervise("idle", idle)


def now() -> float:
    """The rig's clock (monotonic, seconds)."""
    return time.perf_counter()
