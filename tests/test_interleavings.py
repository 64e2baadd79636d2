"""Bus, readiness, reload and shutdown scenarios under many seeded random schedules.

Each test runs one scenario under every seed of ``interleave.seeds()`` on a loop that shuffles
its ready queue; the invariants must hold for every schedule. A failure names its seed.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from interleave import jitter, run_with_seed, seeds
from ron_kernel import Bus, HealthState, KernelEvent, Metrics
from ron_kernel.errors import Closed, Lagged

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


async def _readiness_scenario(rng: random.Random) -> None:
    health = HealthState(prerequisites=("config", "bus_attached"))
    services = [f"svc-{i}" for i in range(rng.randint(1, 3))]
    violations: list[str] = []

    async def flip(name: str) -> None:
        for _ in range(rng.randint(1, 6)):
            health.set(name, rng.random() < 0.7)
            await jitter(rng)
        health.set(name, True)

    async def prerequisites() -> None:
        await jitter(rng, 5)
        health.satisfy("config")
        await jitter(rng, 5)
        health.attach_bus(Bus(4))

    async def observer() -> None:
        for _ in range(30):
            if health.all_ready():
                snap = health.snapshot()
                if snap["missing"] or not all(snap["services"].values()):
                    violations.append(f"ready while missing {snap['missing']}")
            await asyncio.sleep(0)

    await asyncio.gather(observer(), prerequisites(), *(flip(s) for s in services))
    assert violations == []
    assert health.all_ready(), health.snapshot()


@pytest.mark.parametrize("seed", SEEDS)
def test_ready_only_when_every_prerequisite_holds(seed: int):
    run_with_seed(seed, _readiness_scenario)
