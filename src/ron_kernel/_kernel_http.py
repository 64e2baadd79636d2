"""The kernel's extra HTTP endpoints: ``GET /status``, ``GET /events`` (NDJSON or SSE) and
``GET /debug/tasks`` (loopback only, when ``observability.debug_endpoints`` is on)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from ._bus import Bus, Receiver
from ._counters import KernelCounters
from ._errors import Closed, Lagged
from ._events import KernelEvent
from ._loop_health import dump_tasks
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

    __slots__ = ("batch", "content_type", "head", "keepalive", "keepalive_frame", "lag_frame",
                 "pace", "prefix", "suffix")

    def __init__(self, *, content_type: str, prefix: bytes, suffix: bytes, lag_frame: bytes,
                 head: bytes = b"", keepalive: float | None = None,
                 keepalive_frame: bytes = b"", batch: int = BATCH, pace: float = 0.0) -> None:
        self.content_type = content_type
        self.prefix = prefix  # before each event's JSON
        self.suffix = suffix  # after it
        self.lag_frame = lag_frame  # %-format with the number of missed events
        self.head = head  # sent once, right after the headers
        self.keepalive = keepalive  # seconds of silence before keepalive_frame is sent
        self.keepalive_frame = keepalive_frame
        self.batch = batch  # most events taken from the receiver per write
        self.pace = pace  # seconds between two writes of events (0: as they come)


NDJSON = Framing(content_type=EVENTS_CONTENT_TYPE, prefix=b"", suffix=b"\n",
                 lag_frame=b'{"type":"Lagged","missed":%d}\n')
"""One JSON object a line; lag is the line ``{"type":"Lagged","missed":N}``."""

SSE_KEEPALIVE = 15.0
"""Seconds of silence after which an SSE stream sends a comment line (proxies, dead peers)."""

SSE_RETRY_MS = 1000
"""The ``retry:`` an SSE stream announces: browsers reconnect this soon after a drop."""

SSE_PACE = 0.1
"""Seconds an SSE stream waits after each write of events: bursts are sent together, at most 20
writes a second per client, so watchers cost the kernel's loop a bounded amount however busy
the bus is (a flood beyond ``SSE_BATCH / SSE_PACE`` events/s reaches them as ``lagged``)."""

SSE_BATCH = 256
"""Most events an SSE stream sends per write (with ``SSE_PACE``: up to ~10,000 events/s)."""

SSE = Framing(content_type=SSE_CONTENT_TYPE, prefix=b"data: ", suffix=b"\n\n",
              lag_frame=b'event: lagged\ndata: {"type":"Lagged","missed":%d}\n\n',
              head=b"retry: %d\n: ron-kernel events\n\n" % SSE_RETRY_MS,
              keepalive=SSE_KEEPALIVE, keepalive_frame=b": keep-alive\n\n",
              batch=SSE_BATCH, pace=SSE_PACE)
"""Server-Sent Events: one ``data:`` line of the same JSON per event (the default ``message``
event), lag as a named ``lagged`` event carrying ``{"type":"Lagged","missed":N}``, a comment every
``SSE_KEEPALIVE`` s of silence, paced (``SSE_PACE``, ``SSE_BATCH``)."""


class EncodedEvents:
    """The JSON of recent events, shared by every stream of one kernel.

    Every client reads the same event objects from the bus ring: each is encoded once, however
    many streams send it. Keyed by identity (the entry keeps the event, so the key cannot be
    reused while it is cached); cleared when it holds ``limit`` entries. Only streams touch it:
    with no client there is no per-event work.
    """

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int = 8192) -> None:
        self._entries: dict[int, tuple[Any, bytes]] = {}
        self.limit = limit

    def json(self, event: Any) -> bytes:
        """``event.to_json()`` as bytes, from the cache when another stream already encoded it."""
        hit = self._entries.get(id(event))
        if hit is not None and hit[0] is event:
            return hit[1]
        data: bytes = event.to_json().encode()
        if len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[id(event)] = (event, data)
        return data


def _encode_batch(batch: list[Any], counters: KernelCounters | None,
                  framing: Framing = NDJSON, encoded: EncodedEvents | None = None) -> bytes:
    """The frames of a batch; what is not a KernelEvent is skipped and counted, never fatal."""
    frames = []
    prefix, suffix = framing.prefix, framing.suffix
    for event in batch:
        try:
            data = encoded.json(event) if encoded is not None else event.to_json().encode()
            frames.append(prefix + data + suffix)
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
            text=encode_json({"error": "unknown format", "format": printable(fmt)[:64],
                              "accepted": ["ndjson", "sse"]}).decode(),
            content_type="application/json")
    accept = request.headers.get("Accept", "")
    if SSE_CONTENT_TYPE in accept.lower():
        return SSE
    return NDJSON


async def _next_batch(rx: Receiver[Any], limit: int,
                      keepalive: float | None) -> list[Any] | None:
    """The next batch from ``rx``; ``None`` when ``keepalive`` seconds passed without one."""
    if keepalive is None:
        return await rx.recv_many(limit)
    try:
        async with asyncio.timeout(keepalive):
            return await rx.recv_many(limit)  # cancel-safe: a timeout consumes nothing
    except TimeoutError:
        return None


async def stream_events(request: web.Request, bus: Bus[KernelEvent], framing: Framing,
                        streams: set[asyncio.Task[Any]] | None = None,
                        counters: KernelCounters | None = None,
                        encoded: EncodedEvents | None = None) -> web.StreamResponse:
    """Serve one ``/events`` client in ``framing`` until the bus closes or the client leaves.

    One receiver per client (a slow client only lags itself), batches from ``recv_many``,
    unencodable objects skipped and counted, each event encoded once for every stream sharing
    ``encoded``. The serving task is in ``streams`` while it runs.
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
            keepalive, limit, pace = framing.keepalive, framing.batch, framing.pace
            while True:
                try:
                    batch = await _next_batch(rx, limit, keepalive)
                except Lagged as lag:
                    await resp.write(framing.lag_frame % lag.missed)
                    continue
                except Closed:
                    break
                if batch is None:
                    await resp.write(framing.keepalive_frame)
                    continue
                body = _encode_batch(batch, counters, framing, encoded)
                if body:
                    await resp.write(body)
                if pace:
                    await asyncio.sleep(pace)  # what arrives meanwhile goes in the next write
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

    encoded = EncodedEvents()

    async def handle(request: web.Request) -> web.StreamResponse:
        return await stream_events(request, bus, choose_framing(request), streams, counters,
                                   encoded)

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
