"""Fault class: a worker process writes what is not a frame of the channel protocol.

Bytes that are not a frame (a length over the limit, a payload that is not JSON or not an
object) or a frame of the wrong shape (an unknown type, events that are not a list, an event
of an unknown kind) arrive on the parent's end of a worker's channel -- a bug in the app, a
library writing to the wrong descriptor, memory corruption.

Rule: the parent never crashes and never believes the bytes. The worker is killed and reported
as its crash, ``ServiceCrashed(service="<pool>/<index>", reason="protocol error: ...")``,
counted in ``worker_kills_total{reason="protocol"}``, and restarted like any child; the other
workers and the parent's own children are untouched.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ron_kernel import Config, KernelEvent
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ChildContext
from workers_apps import GARBAGE, Knobs


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_garbage_on_the_channel_kills_that_worker_only(kind: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--sup-min-backoff", "20ms", "--sup-max-backoff", "50ms"]
    config = Config.from_mapping({"app": {"label": kind}},
                                 base=Config.load(argv=argv, env={}, app=Knobs))
    kernel = Kernel(config, app_config=Knobs, env={}, argv=argv, watch_config=False,
                    handle_sighup=False)
    own_ready = asyncio.Event()

    async def own(ctx: ChildContext) -> None:
        ctx.ready()
        own_ready.set()
        await ctx.shutdown.wait()

    kernel.supervise("own", own)
    kernel.supervise_workers("w", app="workers_apps:garbage", count=1)
    rx = kernel.bus.subscribe()
    await kernel.start()
    try:
        async with asyncio.timeout(30):
            while True:
                found = await rx.recv()
                if isinstance(found, KernelEvent.ServiceCrashed) and found.service == "w/0":
                    break
        assert found.reason.startswith("protocol error: "), found.reason
        counters = kernel.metrics.counters
        assert counters.worker_kills_total.get("w", "0", "protocol") >= 1
        assert own_ready.is_set() and kernel.supervisor.snapshot()["own"]["state"] == "running"
        assert kernel.state == "running"
    finally:
        await kernel.shutdown(2.0)
    assert os.getpid()  # the parent is still here to say so
