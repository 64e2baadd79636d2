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

The ``ron-kernel run`` command uses exactly this class.
"""

from ._kernel import EXIT_SECOND_SIGNAL as EXIT_SECOND_SIGNAL
from ._kernel import STREAM_FLUSH_GRACE as STREAM_FLUSH_GRACE
from ._kernel import Kernel as Kernel

__all__ = [
    "EXIT_SECOND_SIGNAL",
    "STREAM_FLUSH_GRACE",
    "Kernel",
]
