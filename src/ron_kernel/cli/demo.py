"""The built-in demo services of ``ron-kernel run`` (used when no ``--app`` is given).

* ``heartbeat`` reports itself ready and beats every second (a log line every 10 beats);
* ``bus-consumer`` follows the kernel bus and logs every event it sees;
* ``flaky-worker`` does "work" and crashes now and then, so restarts, backoff and, when it
  crashes too often, quarantine are visible in ``/readyz``, ``/metrics`` and ``ron-kernel tail``;
* ``demo-operator`` plays the operator: it releases a quarantined worker after a while.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .._events import KernelEvent
from .._logging import get_logger
from ..errors import Closed, Lagged

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..supervisor import ChildContext

RELEASE_AFTER = 20.0  # seconds a quarantined demo worker waits for the demo operator


async def heartbeat(ctx: ChildContext) -> None:
    """Report ready, then beat every second until told to stop."""
    log = get_logger("demo.heartbeat")
    ctx.ready(True)
    beats = 0
    while await ctx.sleep(1.0):  # False at shutdown: the loop ends at once
        beats += 1
        if beats % 10 == 0:
            log.info("heartbeat", beats=beats)
    log.info("heartbeat_stopped", beats=beats)


async def bus_consumer(ctx: ChildContext) -> None:
    """Log every kernel event; stop at Shutdown (or when the bus closes)."""
    log = get_logger("demo.consumer")
    with ctx.bus.subscribe() as rx:
        ctx.ready(True)
        while True:
            try:
                event = await rx.recv()
            except Lagged as lag:
                log.warning("consumer_lagged", missed=lag.missed)
                continue
            except Closed:
                return
            log.info("event_seen", event_type=type(event).__name__, detail=event.to_json())
            if isinstance(event, KernelEvent.Shutdown):
                return


async def flaky_worker(ctx: ChildContext) -> None:
    """Work for a few seconds, then crash: the supervisor restarts it with backoff."""
    ctx.ready(True)
    lifetime = random.uniform(1.5, 6.0)
    if await ctx.sleep(lifetime):  # shutdown first: a clean return
        raise RuntimeError(f"demo crash after {lifetime:.1f}s of work")


def demo_operator(kernel: Kernel) -> Any:
    """Return a child that releases the quarantined demo worker after ``RELEASE_AFTER`` s."""

    async def operator(ctx: ChildContext) -> None:
        log = get_logger("demo.operator")
        ctx.ready(True)
        while await ctx.sleep(1.0):
            info = kernel.supervisor.snapshot().get("flaky-worker")
            if info and info["state"] == "quarantined":
                if not await ctx.sleep(RELEASE_AFTER):
                    return
                log.warning("operator_release", service="flaky-worker",
                            reason="demo operator releases the quarantined worker")
                kernel.supervisor.release("flaky-worker")

    return operator


def install_demo(kernel: Kernel) -> None:
    """Add the demo services to ``kernel``."""
    kernel.supervise("heartbeat", heartbeat)
    kernel.supervise("bus-consumer", bus_consumer)
    kernel.supervise("flaky-worker", flaky_worker)
    kernel.supervise("demo-operator", demo_operator(kernel))
