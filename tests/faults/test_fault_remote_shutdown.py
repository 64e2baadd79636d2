"""Fault class: a Shutdown that comes from elsewhere (another node, or forged on the subjects).

Rule: remote events never enter the local bus. A remote ``Shutdown`` is a fleet event like any
other (``("web-2", Shutdown)`` on fleet receivers) and never stops this kernel; one forged with
this kernel's own node name is ignored (own events are not echoed back).
"""

from __future__ import annotations

import asyncio

from _faults_support import until
from _nats_support import federated_kernel, nats_server, prefix, raw_client

from ron_kernel import KernelEvent
from ron_kernel._fleet import encode
from ron_kernel.errors import Empty

__all__ = ["nats_server", "raw_client"]  # fixtures, used by name


async def test_a_remote_shutdown_is_a_fleet_event_and_never_stops_this_kernel(
        nats_server, raw_client):
    p = prefix()
    async with federated_kernel(nats_server.url, "web-1", p) as k, \
            federated_kernel(nats_server.url, "web-2", p) as other:
        local = k.bus.subscribe()
        fleet = k.fleet.subscribe()
        await until(lambda: k.status()["federation"]["connected"]
                    and other.status()["federation"]["connected"], within=10)
        # a real one: the other kernel shuts down
        await other.shutdown()
        assert await asyncio.wait_for(fleet.recv(), 5) == ("web-2", KernelEvent.Shutdown())
        # forged ones: our own name (ignored) and a node nobody runs
        await raw_client.publish(f"{p}.web-1.kernel.shutdown",
                                 encode(KernelEvent.Shutdown(), "web-1", 99, 1.0))
        await raw_client.publish(f"{p}.ghost.kernel.shutdown",
                                 encode(KernelEvent.Shutdown(), "ghost", 1, 1.0))
        await raw_client.flush()
        assert await asyncio.wait_for(fleet.recv(), 5) == ("ghost", KernelEvent.Shutdown())
        await asyncio.sleep(0.2)
        assert k.state == "running" and not k.bus.closed
        try:
            leaked = local.try_recv()
        except Empty:
            leaked = None
        assert leaked is None  # nothing remote on the local bus
        assert "web-1" not in k.status()["fleet"]["nodes"]
        assert set(k.status()["fleet"]["nodes"]) == {"web-2", "ghost"}
