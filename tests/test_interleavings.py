"""Bus, readiness, reload and shutdown scenarios under many seeded random schedules.

Each test runs one scenario under every seed of ``interleave.seeds()`` on a loop that shuffles
its ready queue; the invariants must hold for every schedule. A failure names its seed.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable

import pytest

from interleave import jitter, run_with_seed, seeds
from ron_kernel import Bus, HealthState, KernelEvent, Metrics
from ron_kernel.errors import Canceled, Closed, Lagged
from ron_kernel.supervisor import ChildContext, Supervisor

SEEDS = seeds()


def test_shuffled_loop_really_reorders_callbacks():
    orders = set()
    for seed in range(20):
        async def scenario(rng: random.Random) -> tuple[int, ...]:
            order: list[int] = []
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            for i in range(5):
                loop.call_soon(order.append, i)
            loop.call_soon(lambda: loop.call_soon(done.set_result, None))
            await done
            return tuple(order)
        orders.add(run_with_seed(seed, scenario))
    assert len(orders) > 1, "the shuffling loop never changed the order of ready callbacks"


async def _bus_scenario(rng: random.Random) -> None:
    capacity = rng.choice([1, 2, 3, 8])
    n_rx = rng.randint(1, 4)
    total = rng.randint(1, 40)
    bus: Bus[int] = Bus(capacity, metrics=Metrics())
    receivers = [bus.subscribe() for _ in range(n_rx)]

    async def consume(rx, slow: bool) -> tuple[list[int], int]:
        seen: list[int] = []
        missed = 0
        while True:
            try:
                if rng.random() < 0.5:
                    seen.extend(await rx.recv_many(rng.choice([None, 1, 3])))
                else:
                    seen.append(await rx.recv())
            except Lagged as lag:
                missed += lag.missed
            except Closed:
                return seen, missed
            if slow:
                await jitter(rng, 4)

    tasks = [asyncio.create_task(consume(rx, i == 0)) for i, rx in enumerate(receivers)]
    for i in range(total):
        assert bus.publish(i) == n_rx
        await jitter(rng)
    bus.close()
    for seen, missed in await asyncio.gather(*tasks):
        assert seen == sorted(set(seen)), f"reordered or duplicated delivery: {seen}"
        assert len(seen) + missed == total, f"silent loss: saw {len(seen)}, missed {missed}"
        assert seen and seen[-1] == total - 1, "the last message before close was lost"


@pytest.mark.parametrize("seed", SEEDS)
def test_bus_delivery_is_ordered_without_duplicates_or_silent_loss(seed: int):
    run_with_seed(seed, _bus_scenario)


async def _shutdown_event_scenario(rng: random.Random) -> None:
    # Subscribers that come and go; Shutdown published then the bus closed: every receiver
    # alive at publish time must read Shutdown before Closed, even if it lagged.
    bus: Bus[KernelEvent] = Bus(rng.choice([1, 2, 4]))
    receivers = [bus.subscribe() for _ in range(rng.randint(1, 5))]

    async def consume(rx) -> bool:
        last = None
        while True:
            try:
                last = await rx.recv()
            except Lagged:
                continue
            except Closed:
                return isinstance(last, KernelEvent.Shutdown)
            await jitter(rng)

    tasks = [asyncio.create_task(consume(rx)) for rx in receivers]
    for i in range(rng.randint(0, 10)):
        bus.publish(KernelEvent.Health(service=f"svc-{i}", ok=bool(i % 2)))
        await jitter(rng)
    bus.publish(KernelEvent.Shutdown())
    bus.close()
    results = await asyncio.gather(*tasks)
    assert all(results), "a subscriber lost the Shutdown event"


@pytest.mark.parametrize("seed", SEEDS)
def test_no_subscriber_loses_shutdown(seed: int):
    run_with_seed(seed, _shutdown_event_scenario)


GO = KernelEvent.ConfigUpdated(version=1_000)


async def _readiness_scenario(rng: random.Random, *, subscribe_first: bool = True) -> None:
    # Real supervised children report readiness from tasks that await between every step: each
    # subscribes to the bus, reports ready, flips its readiness a few times; the kernel's
    # prerequisites are met by a task that awaits between them; a client waits until the
    # process is ready, then publishes GO. Invariants, for every schedule: readiness never
    # holds while a prerequisite is unmet, and every service that was ready when GO was
    # published receives GO. (`subscribe_first=False` is the mutant: ready, await, subscribe.)
    health = HealthState(prerequisites=("config", "bus_attached"))
    bus: Bus[KernelEvent] = Bus(256)
    sup = Supervisor(bus=bus, health=health, min_backoff=0, max_backoff=0)
    satisfied: set[str] = set()
    received: set[str] = set()
    violations: list[str] = []

    async def service(ctx: ChildContext) -> None:
        if subscribe_first:
            rx = ctx.bus.subscribe()
            await jitter(rng)
            ctx.ready()
        else:
            ctx.ready()
            await jitter(rng)
            rx = ctx.bus.subscribe()
        with rx:
            for _ in range(rng.randint(0, 3)):
                await jitter(rng)
                ctx.ready(False)
                await jitter(rng)
                ctx.ready(True)
            while True:
                try:
                    event = await ctx.wait(rx.recv())
                except Canceled:
                    return
                if event == GO:
                    received.add(ctx.name)

    async def prerequisites() -> None:
        await jitter(rng, 5)
        health.satisfy("config")
        satisfied.add("config")
        await jitter(rng, 5)
        health.attach_bus(bus)
        satisfied.add("bus_attached")

    async def client() -> set[str]:
        for _ in range(10_000):  # bounded: a scenario that never gets ready fails, not hangs
            if health.all_ready():
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError(f"never ready: {health.snapshot()['missing']}")
        snap = health.snapshot()
        if satisfied != {"config", "bus_attached"} or snap["missing"]:
            violations.append(f"ready with prerequisites {satisfied}, missing {snap['missing']}")
        ready = {name for name, ok in snap["services"].items() if ok}
        if not ready or ready != set(snap["services"]):
            violations.append(f"ready while services are {snap['services']}")
        bus.publish(GO)
        for _ in range(500):  # yields, not time: a service that will get GO gets it long before
            if ready <= received:
                break
            await asyncio.sleep(0)
        return ready

    for i in range(rng.randint(1, 3)):
        sup.add(f"svc-{i}", service)
    await sup.start()
    ready, _ = await asyncio.gather(client(), prerequisites())
    await sup.shutdown(1.0)
    assert violations == []
    missed = sorted(ready - received)
    assert missed == [], f"ready when GO was published, yet never received it: {missed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_ready_only_when_every_prerequisite_holds(seed: int):
    run_with_seed(seed, _readiness_scenario)


def _first_failure(scenario: Callable[[random.Random], Awaitable[None]]) -> str | None:
    for seed in range(500):
        try:
            run_with_seed(seed, scenario)
        except AssertionError as failure:
            return str(failure)
    return None


def test_the_readiness_scenario_reorders_something_mutants_fail_under_some_seed(monkeypatch):
    # Proof that the seeds really reorder the awaits the invariants depend on, so the scenario
    # above can fail. Mutant 1: services that report ready before they subscribe (awaiting in
    # between), the README's old order.
    failure = _first_failure(functools.partial(_readiness_scenario, subscribe_first=False))
    assert failure is not None, "no schedule broke the ready-then-subscribe mutant"
    assert "never received it" in failure
    # Mutant 2: a readiness rule that forgets the prerequisites.
    monkeypatch.setattr(HealthState, "all_ready",
                        lambda self: bool(self._services) and not self._not_ready)
    failure = _first_failure(_readiness_scenario)
    assert failure is not None, "no schedule broke the readiness-without-prerequisites mutant"
    assert "ready with prerequisites" in failure
