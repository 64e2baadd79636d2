"""A short live demonstration of the bus: ``python examples/bus_demo.py`` (``make demo-bus``).

One publisher sends numbered events to three receivers: a batch reader, a per-message reader
and a deliberately slow one. The slow reader falls more than ``capacity`` behind, learns exactly
how many messages it missed (``Lagged``) and carries on; the publisher never waits for it.
"""

from __future__ import annotations

import asyncio

from ron_kernel import Bus, Metrics
from ron_kernel.bus import Receiver
from ron_kernel.errors import Closed, Lagged


async def _reader(name: str, rx: Receiver[int], delay: float, batch: bool) -> dict[str, int]:
    got = lagged = 0
    with rx:
        while True:
            try:
                if batch:
                    got += len(await rx.recv_many())
                else:
                    await rx.recv()
                    got += 1
            except Lagged as lag:
                lagged += lag.missed
                print(f"  {name:<6} lagged: missed {lag.missed} message(s), continuing")
            except Closed:
                break
            if delay:
                await asyncio.sleep(delay)
    return {"received": got, "missed": lagged}


async def run_demo(messages: int = 2000, capacity: int = 256) -> dict[str, dict[str, int]]:
    """Publish ``messages`` events to three receivers and return what each one saw."""
    metrics = Metrics()
    bus: Bus[int] = Bus(capacity, metrics=metrics)
    readers = {
        "batch": asyncio.create_task(_reader("batch", bus.subscribe(), 0.0, True)),
        "single": asyncio.create_task(_reader("single", bus.subscribe(), 0.0, False)),
        "slow": asyncio.create_task(_reader("slow", bus.subscribe(), 0.002, False)),
    }
    print(f"publishing {messages} events to {bus.receiver_count} receivers "
          f"(capacity {capacity}; 'slow' sleeps 2 ms per event)")
    for i in range(messages):
        bus.publish(i)
        if i % 50 == 49:
            await asyncio.sleep(0)  # let the readers run now and then, as real producers do
    bus.close()
    results = {name: await task for name, task in readers.items()}
    for name, r in results.items():
        print(f"  {name:<6} received {r['received']:>5}  missed {r['missed']:>5}")
    stats = bus.stats()
    print(f"bus: published={stats.published} lagged(missed)={stats.lagged} "
          f"receivers now={stats.receivers}")
    for line in metrics.render().decode().splitlines():
        if line.startswith(("bus_published_total", "bus_lagged_total")):
            print(f"metric {line}")
    return results


def main() -> None:
    """Entry point of ``python examples/bus_demo.py``."""
    asyncio.run(run_demo())


if __name__ == "__main__":
    main()
