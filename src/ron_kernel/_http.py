"""The observability HTTP server behind ``Metrics.serve``: /metrics, /healthz, /readyz.

Plain aiohttp low-level server pieces (``Application`` + ``AppRunner`` + ``TCPSite``) in the
running loop, with ``handle_signals=False`` so the embedding process keeps its signals.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ._addr import parse_addr, resolves_to_every_interface
from ._counters import KernelCounters
from ._health import HealthState
from ._logging import get_logger
from ._tracing import kernel_span

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Exporter(Protocol):
    """What the server needs of :class:`~ron_kernel.Metrics` (it never imports it)."""

    @property
    def registry(self) -> CollectorRegistry:
        """Every collector to expose."""
        ...

    @property
    def health(self) -> HealthState:
        """What /readyz reports."""
        ...

    @property
    def counters(self) -> KernelCounters:
        """Where request latency is counted."""
        ...

    def render_kernel_text(self) -> str:
        """The kernel series in text format."""
        ...

    def render_others(self) -> bytes:
        """Every other collector in text format."""
        ...

    @property
    def has_scrape_sources(self) -> bool:
        """Whether other processes' series are merged in (text format only, then)."""
        ...

    async def scrape_text(self) -> bytes:
        """Everything, in the text format 0.0.4 (sources merged in)."""
        ...

# Request heads are tiny for these endpoints; anything near aiohttp's default 8 KiB line limit
# is a client bug or an attack.
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 4096
MAX_HEADERS = 64

_JSON = "application/json"
TEXT_FORMAT = choose_encoder("")[1]
"""The content type of the text format 0.0.4 (what ``/metrics`` answers by default)."""


class _ServerLog:
    """Stands in for aiohttp's stdlib server logger.

    A malformed request is one short warning line (no traceback: anyone can send garbage, and
    the log should not grow by a stack per packet); a bug in a handler is logged with its
    traceback.
    """

    def __init__(self) -> None:
        self._log = get_logger("http")

    def exception(self, msg: str, *args: object, exc_info: object = None, **_: object) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            self._log.warning("http_bad_request", reason=f"{exc.code}: {exc.message}"[:200])
        else:
            self._log.error("http_handler_error", reason=repr(exc)[:200], exc_info=exc)

    def debug(self, *args: object, **kwargs: object) -> None:
        """aiohttp's debug chatter is dropped."""

    info = warning = error = debug


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON,
                        headers=headers)


def _not_allowed(request: web.Request, allowed: set[str]) -> web.Response:
    return _json(405, {"error": "method not allowed", "method": request.method,
                       "allowed": sorted(allowed)},
                 headers={"Allow": ", ".join(sorted(allowed))})


_BODY_LIMIT = "_ron_kernel_body_limit"
H = TypeVar("H", bound=Handler)


def accepts_body(limit: int) -> Callable[[H], H]:
    """Mark a handler as taking a request body of at most ``limit`` bytes.

    Every other matched route answers a request with a body 413 before its handler runs. A
    marked handler gets the request as it is and reads the body with :func:`read_body` after
    its own checks, so it decides what comes first (a route that is switched off must still
    answer 404, whatever the body).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"body limit must be an int >= 0 bytes, got {limit!r}")

    def mark(handler: H) -> H:
        setattr(handler, _BODY_LIMIT, limit)
        return handler

    return mark


async def read_body(request: web.Request, limit: int, *, within: float = 5.0) -> bytes | None:
    """The request body, or ``None`` when it is longer than ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused without reading; a chunked body is
    read only up to ``limit + 1`` bytes. Raises ``TimeoutError`` when the body does not arrive
    within ``within`` seconds (a slow client cannot hold the handler).
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    if not request.body_exists:
        return b""
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(within):
        while True:
            chunk = await request.content.read(limit + 1 - size)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The route decides first: an unknown path is 404 and a method the route does not take is
    # 405 (with Allow), whatever the request carries. Only a matched route may refuse a body.
    failure = request.match_info.http_exception
    if request.method == "CONNECT":  # no route tunnels; its authority-form target is no path
        return _not_allowed(request, {"GET", "HEAD"})
    if isinstance(failure, web.HTTPMethodNotAllowed):
        return _not_allowed(request, failure.allowed_methods)
    if failure is not None:
        return _json(404, {"error": "not found", "path": request.path})
    if request.body_exists and getattr(request.match_info.handler, _BODY_LIMIT, None) is None:
        # A route that opted in with accepts_body() reads (and bounds) the body itself.
        return _json(413, {"error": "request body not accepted", "path": request.path})
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _json(404, {"error": "not found", "path": request.path})
    except web.HTTPMethodNotAllowed as exc:
        return _not_allowed(request, exc.allowed_methods)


def build_app(metrics: Exporter, *, extra_routes: Sequence[tuple[str, str, Handler]] = (),
              retry_after: int = 5) -> web.Application:
    """Return the aiohttp application serving ``metrics`` (exposed for tests and embedding)."""
    health = metrics.health
    latency = metrics.counters.request_latency_seconds
    retry_header = {"Retry-After": str(retry_after)}

    async def metrics_handler(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        with kernel_span("metrics", "scrape"):
            if content_type.startswith("text/plain") or metrics.has_scrape_sources:
                # Kernel series: the direct writer, on the loop (it reads loop-owned dicts; its
                # time is in docs/PERFORMANCE.md, Targets). Other collectors: prometheus_client
                # in a thread. Worker processes' series are merged in by family (text only).
                body = await metrics.scrape_text()
                content_type = TEXT_FORMAT
            else:
                # OpenMetrics is rarer: all of it in a worker thread (the kernel collector
                # copies its dicts atomically, see _KernelCollector).
                body = await asyncio.to_thread(encoder, metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def healthz_handler(request: web.Request) -> web.Response:
        return _json(200, {"alive": True})

    async def readyz_handler(request: web.Request) -> web.Response:
        start = time.perf_counter()
        snapshot = dict(health.snapshot())
        if snapshot["ready"]:
            response = _json(200, snapshot)
        else:
            body = {**snapshot, "degraded": True, "missing": snapshot["missing"],
                    "retry_after": retry_after}
            response = _json(503, body, headers=retry_header)
        latency.observe("readyz", value=time.perf_counter() - start)
        return response

    app = web.Application(middlewares=[_guard])
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz_handler)
    app.router.add_get("/readyz", readyz_handler)
    for method, path, handler in extra_routes:
        app.router.add_route(method.upper(), path, handler)
    return app


async def serve_metrics(
    metrics: Exporter,
    addr: str | tuple[str, int],
    *,
    extra_routes: Sequence[tuple[str, str, Handler]] = (),
    allow_unspecified: bool = False,
    retry_after: int = 5,
    read_timeout: float = 5.0,
) -> tuple[asyncio.Task[None], tuple[str, int]]:
    """Start the server for ``metrics`` on ``addr``; see ``Metrics.serve``."""
    try:
        host, port = parse_addr(addr)
    except ValueError as exc:
        raise ValueError(f"observability addr {addr!r}: {exc}") from None
    if not allow_unspecified and await resolves_to_every_interface(host):
        raise ValueError(
            f"observability addr {addr!r} binds every interface; pass allow_unspecified=True "
            "if you mean it (the default is loopback only, e.g. '127.0.0.1:0')")
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 1:
        raise ValueError(f"retry_after must be a positive int of seconds, got {retry_after!r}")
    app = build_app(metrics, extra_routes=extra_routes, retry_after=retry_after)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        logger=_ServerLog(),
        # An idle or half-sent connection is closed after read_timeout (aiohttp checks the
        # keep-alive timer from the moment a connection opens), which bounds slow-loris clients.
        keepalive_timeout=read_timeout,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
        lingering_time=1.0,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"observability addr {addr!r}: cannot bind: {exc.strerror}") \
            from exc
    except BaseException:
        await runner.cleanup()
        raise
    addresses = runner.addresses
    bound = addresses[0] if addresses else (host, port)
    bound_addr = (str(bound[0]), int(bound[1]))

    started = asyncio.Event()

    async def run() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    task = asyncio.create_task(run(), name=f"ron-kernel-http:{bound_addr[0]}:{bound_addr[1]}")
    # A task cancelled before its first step never runs its finally: wait until it is inside
    # the try, so cancelling the returned task always closes the listener.
    await started.wait()
    return task, bound_addr
