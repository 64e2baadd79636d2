"""Crash-only supervision of asyncio children, with OTP's strategies and restart types.

A child is an async callable taking a :class:`ChildContext`. When it crashes the supervisor
publishes ``KernelEvent.ServiceCrashed(service, reason)``, marks it not ready, logs the
traceback, waits a jittered exponential backoff (each child on its own timer) and starts it
again. More than ``restart_cap`` restarts inside the sliding ``restart_window`` quarantines the
child: it stays down, readiness degrades with ``quarantined:<name>``, the process keeps running,
and :meth:`Supervisor.release` brings it back. :meth:`Supervisor.shutdown` always returns within
its deadline plus a short grace (:data:`ABANDON_GRACE`). See ``docs/SUPERVISION.md``.

Example::

    sup = Supervisor(bus=bus, metrics=metrics)
    sup.add("indexer", indexer)                 # async def indexer(ctx): ...
    sup.add("cache", Supervisor(name="cache"))  # trees: a Supervisor is a child too
    async with sup:
        await wait_for_ctrl_c()
"""

from ._supervisor import ABANDON_GRACE as ABANDON_GRACE
from ._supervisor import ChildContext as ChildContext
from ._supervisor import ChildInfo as ChildInfo
from ._supervisor import Supervisor as Supervisor
from ._supervisor import backoff_delay as backoff_delay

__all__ = [
    "ABANDON_GRACE",
    "ChildContext",
    "ChildInfo",
    "Supervisor",
    "backoff_delay",
]
