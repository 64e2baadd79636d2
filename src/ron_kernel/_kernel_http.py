"""The kernel's extra HTTP endpoints: ``GET /status`` and ``GET /events`` (NDJSON or SSE)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from ._bus import Bus, Receiver
from ._counters import KernelCounters
from ._errors import Closed, Lagged
from ._events import KernelEvent
from ._text import printable, printable_value

# Each /events client gets its own receiver on the kernel bus: a slow client only lags itself.
EVENTS_CONTENT_TYPE = "application/x-ndjson"
SSE_CONTENT_TYPE = "text/event-stream"
BATCH = 256
"""Most events one stream takes from its receiver per wake-up."""


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


class Framing:
    """How one ``/events`` stream frames what it sends: NDJSON or Server-Sent Events."""

    __slots__ = ("content_type", "head", "keepalive", "keepalive_frame", "lag_frame", "prefix",
                 "suffix")

    def __init__(self, *, content_type: str, prefix: bytes, suffix: bytes, lag_frame: bytes,
                 head: bytes = b"", keepalive: float | None = None,
                 keepalive_frame: bytes = b"") -> None:
        self.content_type = content_type
        self.prefix = prefix  # before each event's JSON
        self.suffix = suffix  # after it
        self.lag_frame = lag_frame  # %-format with the number of missed events
        self.head = head  # sent once, right after the headers
        self.keepalive = keepalive  # seconds of silence before keepalive_frame is sent
        self.keepalive_frame = keepalive_frame


NDJSON = Framing(content_type=EVENTS_CONTENT_TYPE, prefix=b"", suffix=b"\n",
                 lag_frame=b'{"type":"Lagged","missed":%d}\n')
"""One JSON object a line; lag is the line ``{"type":"Lagged","missed":N}``."""

SSE_KEEPALIVE = 15.0
"""Seconds of silence after which an SSE stream sends a comment line (proxies, dead peers)."""

SSE_RETRY_MS = 1000
"""The ``retry:`` an SSE stream announces: browsers reconnect this soon after a drop."""

SSE = Framing(content_type=SSE_CONTENT_TYPE, prefix=b"data: ", suffix=b"\n\n",
              lag_frame=b'event: lagged\ndata: {"type":"Lagged","missed":%d}\n\n',
              head=b"retry: %d\n: ron-kernel events\n\n" % SSE_RETRY_MS,
              keepalive=SSE_KEEPALIVE, keepalive_frame=b": keep-alive\n\n")
"""Server-Sent Events: one ``data:`` line of the same JSON per event (the default ``message``
event), lag as a named ``lagged`` event carrying ``{"type":"Lagged","missed":N}``, a comment every
``SSE_KEEPALIVE`` s of silence."""


def _encode_batch(batch: list[Any], counters: KernelCounters | None,
                  framing: Framing = NDJSON) -> bytes:
    """The frames of a batch; what is not a KernelEvent is skipped and counted, never fatal."""
    frames = []
    prefix, suffix = framing.prefix, framing.suffix
    for event in batch:
        try:
            frames.append(prefix + event.to_json().encode() + suffix)
        except Exception:
            if counters is not None:
                counters.events_unencodable_total.inc()
    return b"".join(frames)


def choose_framing(request: web.Request) -> Framing:
    """SSE for ``?format=sse`` or an ``Accept`` naming ``text/event-stream``; NDJSON otherwise.

    ``?format=ndjson`` forces NDJSON; any other ``format`` is a 400 naming the accepted values.
    """
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt == "sse":
            return SSE
        if fmt == "ndjson":
            return NDJSON
        raise web.HTTPBadRequest(
            body=encode_json({"error": "unknown format", "format": printable(fmt)[:64],
                              "accepted": ["ndjson", "sse"]}),
            content_type="application/json")
    accept = request.headers.get("Accept", "")
    if SSE_CONTENT_TYPE in accept.lower():
        return SSE
    return NDJSON


async def _next_batch(rx: Receiver[Any], keepalive: float | None) -> list[Any] | None:
    """The next batch from ``rx``; ``None`` when ``keepalive`` seconds passed without one."""
    if keepalive is None:
        return await rx.recv_many(BATCH)
    try:
        async with asyncio.timeout(keepalive):
            return await rx.recv_many(BATCH)  # cancel-safe: a timeout consumes nothing
    except TimeoutError:
        return None


async def stream_events(request: web.Request, bus: Bus[KernelEvent], framing: Framing,
                        streams: set[asyncio.Task[Any]] | None = None,
                        counters: KernelCounters | None = None) -> web.StreamResponse:
    """Serve one ``/events`` client in ``framing`` until the bus closes or the client leaves.

    One receiver per client (a slow client only lags itself), batches from ``recv_many``,
    unencodable objects skipped and counted. The serving task is in ``streams`` while it runs.
    """
    if bus.closed:
        raise web.HTTPServiceUnavailable(text='{"error":"the kernel is shutting down"}',
                                         content_type="application/json")
    rx = bus.subscribe()
    resp = web.StreamResponse(headers={"Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    resp.content_type = framing.content_type
    task = asyncio.current_task()
    if streams is not None and task is not None:
        streams.add(task)
    try:
        with rx:
            await resp.prepare(request)
            if framing.head:
                await resp.write(framing.head)
            keepalive = framing.keepalive
            while True:
                try:
                    batch = await _next_batch(rx, keepalive)
                except Lagged as lag:
                    await resp.write(framing.lag_frame % lag.missed)
                    continue
                except Closed:
                    break
                if batch is None:
                    await resp.write(framing.keepalive_frame)
                    continue
                body = _encode_batch(batch, counters, framing)
                if body:
                    await resp.write(body)
            await resp.write_eof()
    except ConnectionError:
        pass  # the client went away; its receiver is closed by the with-block
    finally:
        if streams is not None and task is not None:
            streams.discard(task)
    return resp


def events_handler(bus: Bus[KernelEvent],
                   streams: set[asyncio.Task[Any]] | None = None,
                   counters: KernelCounters | None = None) -> Callable[[web.Request], Any]:
    """Return a handler streaming every KernelEvent on ``bus``: NDJSON, or SSE when asked.

    Lines have the flat INTEROP §2.2 shape (``{"type":"Health","service":...,"ok":true}``).
    ``Accept: text/event-stream`` or ``?format=sse`` selects Server-Sent Events (see
    :data:`SSE`: the same JSON in ``data:`` lines, ``event: lagged``, keep-alive comments).
    When the client falls behind by more than the bus capacity it gets one
    ``{"type":"Lagged","missed":N}`` and continues from the oldest retained event. The stream
    ends after the bus is closed and everything was sent. The task serving each stream is kept
    in ``streams`` while it runs, so the kernel can wait for the streams to finish. A published
    object that is not a ``KernelEvent`` is skipped (``events_unencodable_total``); the client
    stays connected.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        return await stream_events(request, bus, choose_framing(request), streams, counters)

    return handle
