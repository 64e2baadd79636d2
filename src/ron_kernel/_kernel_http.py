"""The kernel's extra HTTP endpoints: ``GET /status``, ``GET /events`` (NDJSON stream) and
``GET /debug/tasks`` (loopback only, when ``observability.debug_endpoints`` is on)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from ._bus import Bus
from ._counters import KernelCounters
from ._errors import Closed, Lagged
from ._events import KernelEvent
from ._loop_health import dump_tasks
from ._text import printable, printable_value

# Each /events client gets its own receiver on the kernel bus: a slow client only lags itself.
EVENTS_CONTENT_TYPE = "application/x-ndjson"


def encode_json(value: Any) -> bytes:
    """JSON of ``value``; text that UTF-8 cannot carry is escaped, never a failure."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str)
    except orjson.JSONEncodeError:
        return orjson.dumps(printable_value(value), option=orjson.OPT_NON_STR_KEYS,
                            default=lambda v: printable(str(v)))


def status_handler(status: Callable[[], Mapping[str, Any]]) -> Callable[[web.Request], Any]:
    """Return a handler answering ``GET /status`` with ``status()`` as JSON."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=encode_json(status()), content_type="application/json")

    return handle


def _encode_batch(batch: list[Any], counters: KernelCounters | None) -> bytes:
    """NDJSON of a batch; what is not a KernelEvent is skipped and counted, never fatal."""
    lines = []
    for event in batch:
        try:
            lines.append(event.to_json().encode() + b"\n")
        except Exception:
            if counters is not None:
                counters.events_unencodable_total.inc()
    return b"".join(lines)


def events_handler(bus: Bus[KernelEvent],
                   streams: set[asyncio.Task[Any]] | None = None,
                   counters: KernelCounters | None = None) -> Callable[[web.Request], Any]:
    """Return a handler streaming every KernelEvent on ``bus`` as newline-delimited JSON.

    Lines have the flat INTEROP §2.2 shape (``{"type":"Health","service":...,"ok":true}``).
    When the client falls behind by more than the bus capacity it gets one line
    ``{"type":"Lagged","missed":N}`` and continues from the oldest retained event. The stream
    ends after the bus is closed and everything was sent. The task serving each stream is kept
    in ``streams`` while it runs, so the kernel can wait for the streams to finish. A published
    object that is not a ``KernelEvent`` is skipped (``events_unencodable_total``); the client
    stays connected.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        if bus.closed:
            raise web.HTTPServiceUnavailable(text='{"error":"the kernel is shutting down"}',
                                             content_type="application/json")
        rx = bus.subscribe()
        resp = web.StreamResponse(headers={"Cache-Control": "no-store"})
        resp.content_type = EVENTS_CONTENT_TYPE
        await resp.prepare(request)
        task = asyncio.current_task()
        if streams is not None and task is not None:
            streams.add(task)
        try:
            with rx:
                while True:
                    try:
                        batch = await rx.recv_many(256)
                    except Lagged as lag:
                        await resp.write(b'{"type":"Lagged","missed":%d}\n' % lag.missed)
                        continue
                    except Closed:
                        break
                    body = _encode_batch(batch, counters)
                    if body:
                        await resp.write(body)
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away; its receiver is closed by the with-block
        finally:
            if streams is not None and task is not None:
                streams.discard(task)
        return resp

    return handle


def is_loopback(remote: str | None) -> bool:
    """Whether a peer address (``request.remote``) is a loopback address (IPv4-mapped too)."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def debug_tasks_handler() -> Callable[[web.Request], Any]:
    """Return a handler answering ``GET /debug/tasks`` with every asyncio task as JSON.

    A list of ``{"name", "child", "coro", "state", "stack"}`` (see
    ``ron_kernel._loop_health.dump_tasks``). Peers that are not loopback get 403: stacks show
    file paths and code structure, which is nobody else's business even when the server was
    bound to a wider address.
    """

    async def handle(request: web.Request) -> web.Response:
        if not is_loopback(request.remote):
            body = orjson.dumps({"error": "forbidden: /debug/tasks answers loopback peers only",
                                 "remote": request.remote})
            return web.Response(status=403, body=body, content_type="application/json")
        return web.Response(body=encode_json(dump_tasks()), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    return handle
