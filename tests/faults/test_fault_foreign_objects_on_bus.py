"""Fault class: something that is not a KernelEvent on the kernel bus.

Rule: ``/events`` skips (and counts in ``events_unencodable_total``) what it cannot encode; the
client stays connected and later events still arrive. Tried: a dict, an object, bytes.
"""

from __future__ import annotations

import aiohttp
import orjson

from ron_kernel import KernelEvent
from ron_kernel.kernel import Kernel

ARGV = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0"]


async def test_events_stream_skips_foreign_objects_and_keeps_the_client(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with Kernel(env={}, argv=ARGV, watch_config=False, handle_sighup=False) as k, \
            aiohttp.ClientSession() as http:
        resp = await http.get(k.urls()["events"])
        bus = k.bus
        bus.publish({"not": "an event"})  # type: ignore[arg-type]
        bus.publish(object())  # type: ignore[arg-type]
        bus.publish(b"raw")  # type: ignore[arg-type]
        bus.publish(KernelEvent.Health(service="after", ok=True))
        line = await resp.content.readline()
        assert orjson.loads(line) == {"type": "Health", "service": "after", "ok": True}
        assert k.metrics.counters.events_unencodable_total.get() == 3
        resp.close()
