"""The kernel: one validated Config composed into a bus, metrics, health, supervisor and HTTP.

Embedding is short::

    from ron_kernel.kernel import Kernel

    async def worker(ctx):
        ctx.ready()
        await ctx.shutdown.wait()

    async def main() -> None:
        async with Kernel() as k:            # Config.load(): defaults < file < env
            k.supervise("worker", worker)
            await k.run()                    # until Ctrl-C / SIGTERM, then a bounded drain

The ``ron-kernel run`` command uses exactly this class. With ``federation.nats_url`` set (the
``nats`` extra) its events also go to the fleet, and ``kernel.fleet.subscribe()`` gives the
other kernels' events as ``(node, KernelEvent)`` pairs (:class:`FleetReceiver`; a gap in a
node's sequence raises :class:`FleetLagged`, a ``Lagged`` naming the node).
"""

from ._fleet import Fleet as Fleet
from ._fleet import FleetLagged as FleetLagged
from ._fleet import FleetReceiver as FleetReceiver
from ._fleet import RemoteEvent as RemoteEvent
from ._kernel import EXIT_SECOND_SIGNAL as EXIT_SECOND_SIGNAL
from ._kernel import STREAM_FLUSH_GRACE as STREAM_FLUSH_GRACE
from ._kernel import Kernel as Kernel

__all__ = [
    "EXIT_SECOND_SIGNAL",
    "STREAM_FLUSH_GRACE",
    "Fleet",
    "FleetLagged",
    "FleetReceiver",
    "Kernel",
    "RemoteEvent",
]
