"""The HTTP API, its metrics, and the ``store`` and ``http`` children.

The service enforces the OAP/1 rules; the kernel records (INTEROP §4-5):

* ``PUT /o`` stores the body and answers ``{"id": "b3:<hex>", ...}`` (201, or 200 when the blob
  was already there). A body over ``max_frame`` is refused with 413 without being read:
  a ``Content-Length`` over the limit is refused before the first body byte (before
  ``100 Continue`` too, for clients that ask), and a body without one (chunked) is read at
  most ``max_frame + 1`` bytes. The connection is then closed.
* ``GET /o/b3:<hex>`` verifies the full BLAKE3 digest of the bytes on disk before it serves
  them; a blob that does not hash to its id is never served (500, logged, counted). Unknown
  id: 404; malformed id: 400.
* ``GET /stats`` asks the ``index`` child through its mailbox (request/reply with a timeout).

Every reject is counted in ``blobstore_rejects_total{reason}`` and every request in the
``blobstore_request_seconds{op,code}`` histogram, both registered on the kernel's registry and
so served on the kernel's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import StreamReader, web
from aiohttp.http import HttpVersion11
from prometheus_client import CollectorRegistry, Counter, Histogram

from ron_kernel import Config
from ron_kernel.errors import Busy, Canceled, Closed, Timeout
from ron_kernel.logging import get_logger
from ron_kernel.mailbox import Mailbox
from ron_kernel.supervisor import ChildContext

from .config import BlobstoreConfig
from .index import Added, IndexMessage, Stats, StatsQuery
from .store import BadId, BlobNotFound, DigestMismatch, Store, parse_id

__all__ = ["CHUNK", "LISTEN_SOCKET", "REJECT_REASONS", "STALE_TMP_AGE", "BlobstoreMetrics",
           "make_app", "run_http", "run_store"]

CHUNK = 64 * 1024
"""The storage streaming chunk (64 KiB): how much of a body is read at a time."""

STALE_TMP_AGE = 600.0
"""Seconds after which a temporary file is an interrupted write (a live one lasts milliseconds)."""

LISTEN_SOCKET = "blobstore-http"
"""The name of the kernel's listening socket the ``http`` child serves on."""

REJECT_REASONS = ("frame_too_large", "bad_id", "digest_mismatch", "read_timeout")
"""The ``reason`` label values of ``blobstore_rejects_total`` (all exported from the start)."""

# Request latencies are in the sub-millisecond to seconds range (a 1 MiB body hashed and
# fsynced); these buckets cover both ends.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_log = get_logger("blobstore")


class FrameTooLarge(Exception):
    """A body went over ``max_frame`` while it was read."""


class BlobstoreMetrics:
    """The service's series, on the registry it is given (the kernel's: one ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rejects = Counter(
            "blobstore_rejects_total",
            "Requests the blob store refused, by reason (OAP/1 enforcement lives here)",
            ["reason"], registry=registry)
        for reason in REJECT_REASONS:
            self.rejects.labels(reason=reason)
        self.latency = Histogram(
            "blobstore_request_seconds", "Blob store request latency, by operation and status",
            ["op", "code"], buckets=_BUCKETS, registry=registry)

    def reject(self, reason: str) -> None:
        """Count one reject."""
        self.rejects.labels(reason=reason).inc()

    def observe(self, op: str, code: int, seconds: float) -> None:
        """Record one request's latency."""
        self.latency.labels(op=op, code=str(code)).observe(seconds)


def _error(status: int, message: str, reason: str | None = None) -> web.Response:
    body: dict[str, str] = {"error": message}
    if reason is not None:
        body["reason"] = reason
    return web.json_response(body, status=status)


async def _read_capped(content: StreamReader, limit: int) -> bytes:
    """The whole body, or :class:`FrameTooLarge` as soon as it is over ``limit`` bytes."""
    body = bytearray()
    async for chunk in content.iter_chunked(CHUNK):
        if len(body) + len(chunk) > limit:
            raise FrameTooLarge
        body += chunk
    return bytes(body)


def make_app(ctx: ChildContext[Config[BlobstoreConfig]], store: Store,
             mailbox: Mailbox[IndexMessage], metrics: BlobstoreMetrics) -> web.Application:
    """The aiohttp application of one start of the ``http`` child.

    The handlers read ``ctx.config.app`` on every request, so a reloaded ``max_frame`` or
    ``request_timeout`` applies to the next request.
    """

    def timed(op: str, handler: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            code = 500  # an unexpected exception: aiohttp answers 500
            try:
                response = await handler(request)
                code = response.status
                return response
            except web.HTTPException as exc:
                code = exc.status
                raise
            finally:
                metrics.observe(op, code, time.perf_counter() - started)

        return wrapper

    def too_large(what: str, limit: int) -> web.Response:
        metrics.reject("frame_too_large")
        response = _error(413, f"{what} is over max_frame ({limit} bytes)", "frame_too_large")
        # The rest of the body is not read: close the connection after the answer.
        response.force_close()
        return response

    async def expect(request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse an oversized body before the client sends it."""
        started = time.perf_counter()
        expectation = request.headers.get("Expect", "")
        if request.version != HttpVersion11:
            return None
        if expectation.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"unknown Expect: {expectation}")
        limit = ctx.config.app.max_frame
        length = request.content_length
        if length is not None and length > limit:
            response = too_large(f"a body of {length} bytes", limit)
            metrics.observe("put", response.status, time.perf_counter() - started)
            return response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer itself has not started
        return None

    async def put_object(request: web.Request) -> web.StreamResponse:
        cfg = ctx.config.app
        limit = cfg.max_frame
        length = request.content_length
        if length is not None and length > limit:
            return too_large(f"a body of {length} bytes", limit)
        try:
            async with asyncio.timeout(cfg.request_timeout.total_seconds()):
                body = await _read_capped(request.content, limit)
        except FrameTooLarge:
            return too_large("the body", limit)
        except TimeoutError:
            metrics.reject("read_timeout")
            response = _error(408, f"the body did not arrive within "
                                   f"{cfg.request_timeout.total_seconds():g}s", "read_timeout")
            response.force_close()
            return response
        blob, created = await asyncio.to_thread(store.put, body)
        try:
            mailbox.try_send(Added(blob, len(body)))
        except (Busy, Closed):
            # the blob is safe on disk; the index catches up from disk at its next start
            _log.warning("index_behind", blob=blob, reason="the index mailbox is full")
        if created:
            _log.info("blob_stored", blob=blob, size=len(body))
        return web.json_response({"id": blob, "size": len(body), "created": created},
                                 status=201 if created else 200,
                                 headers={"Location": f"/o/{blob}"})

    async def get_object(request: web.Request) -> web.StreamResponse:
        text = request.match_info["id"]
        try:
            digest = parse_id(text)
        except BadId as exc:
            metrics.reject("bad_id")
            return _error(400, str(exc), "bad_id")
        try:
            data = await asyncio.to_thread(store.get, digest)
        except BlobNotFound:
            return _error(404, f"no object {text}")
        except DigestMismatch as exc:
            metrics.reject("digest_mismatch")
            _log.error("blob_corrupt", blob=exc.blob, actual=exc.actual,
                       path=str(store.path_of(digest)), reason="not served")
            return _error(500, f"{exc.blob} is corrupt in the store; it is not served",
                          "digest_mismatch")
        return web.Response(body=data, content_type="application/octet-stream",
                            headers={"ETag": f'"{text}"'})

    async def stats(request: web.Request) -> web.StreamResponse:
        cfg = ctx.config.app
        try:
            answer: Stats = await mailbox.request(
                StatsQuery(), timeout=cfg.request_timeout.total_seconds())
        except (Timeout, Busy, Closed) as exc:
            return _error(503, f"the index did not answer: {exc}")
        return web.json_response({"objects": answer.objects, "bytes": answer.bytes,
                                  "max_frame": cfg.max_frame})

    app = web.Application()
    app.router.add_route("PUT", "/o", timed("put", put_object), expect_handler=expect)
    app.router.add_get("/o/{id}", timed("get", get_object))
    app.router.add_get("/stats", timed("stats", stats))
    return app


async def run_store(ctx: ChildContext[Config[BlobstoreConfig]], store: Store) -> None:
    """The ``store`` child: open the data directory, report ready, sweep temporary files.

    Every ``sweep_interval`` it removes temporary files older than :data:`STALE_TMP_AGE`.
    ``while await ctx.sleep(...)`` ends at shutdown; the interval is read again before every
    sleep, so a reload applies to the next one.
    """
    try:
        await ctx.wait(asyncio.to_thread(store.open))
        _log.info("store_open", data_dir=str(store.root))
        ctx.ready()
        while await ctx.sleep(ctx.config.app.sweep_interval.total_seconds()):
            removed = await ctx.wait(asyncio.to_thread(store.sweep, STALE_TMP_AGE))
            if removed:
                _log.info("store_swept", removed=removed)
    except Canceled:
        return  # shutdown while the disk was busy: the thread finishes on its own


async def run_http(ctx: ChildContext[Config[BlobstoreConfig]], store: Store,
                   mailbox: Mailbox[IndexMessage], metrics: BlobstoreMetrics,
                   on_listening: Callable[[str], None] | None = None) -> None:
    """The ``http`` child: serve the API until shutdown, logging each applied reload.

    It serves on the kernel's listening socket :data:`LISTEN_SOCKET` (bound once by
    ``build``, in the parent process when there are workers: every worker accepts on the same
    port), logs ``blobstore_listening`` with the bound ``port`` (``listen`` may ask for port 0)
    and calls ``on_listening(url)``. A changed ``listen`` applies at the next start of the
    process (it says so).
    """
    cfg = ctx.config.app
    runner = web.AppRunner(make_app(ctx, store, mailbox, metrics), handle_signals=False,
                           access_log=None, lingering_time=1.0, shutdown_timeout=1.0)
    await runner.setup()
    try:
        # a duplicate of the kernel's socket, owned (and closed at cleanup) by this start
        site = web.SockSite(runner, ctx.listen_socket(LISTEN_SOCKET))
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        url = (f"http://[{bound_host}]:{bound_port}" if ":" in str(bound_host)
               else f"http://{bound_host}:{bound_port}")
        _log.info("blobstore_listening", host=str(bound_host), port=int(bound_port), url=url,
                  data_dir=str(store.root), max_frame=cfg.max_frame)
        if on_listening is not None:
            on_listening(url)
        ctx.ready()
        async for new in ctx.config_changes():
            app = new.app
            _log.info("blobstore_config_applied", config_version=new.version,
                      max_frame=app.max_frame,
                      request_timeout_s=app.request_timeout.total_seconds())
            later = [key for key, changed in (("listen", app.listen != cfg.listen),
                                               ("data_dir", app.data_dir != store.root))
                     if changed]
            if later:
                _log.warning("blobstore_restart_needed", keys=later,
                             reason="listen and data_dir apply at the next start of the "
                                    "process")
    finally:
        await runner.cleanup()
