"""The live status page: ``GET /ui`` and its assets, shipped as package data (``ui/``).

No build step and no CDN: one HTML file, one script and one style sheet, read once when the
routes are made and served from memory. The page reads ``/status`` and follows
``/events?format=sse``; it never writes anything but the control calls the operator asks for
(with a token kept in the tab's memory). Every answer carries a strict Content-Security-Policy
(no inline script, nothing from elsewhere), ``Cache-Control: no-cache`` and ``nosniff``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

__all__ = ["UI_ASSETS", "UI_HEADERS", "ui_routes"]

UI_ASSETS: dict[str, str] = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
"""Every file of the page (``src/ron_kernel/ui/``) and its content type."""

UI_HEADERS: dict[str, str] = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
"""Headers of every ``/ui`` answer."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _load(name: str) -> bytes:
    return resources.files("ron_kernel").joinpath("ui", name).read_bytes()


def _asset_response(body: bytes, content_type: str) -> web.Response:
    charset = None if content_type.startswith("image/") else "utf-8"
    return web.Response(body=body, content_type=content_type, charset=charset,
                        headers=UI_HEADERS)


def ui_routes() -> list[tuple[str, str, Handler]]:
    """The routes of the page: ``/ui`` (the HTML), ``/ui/`` (redirect), ``/ui/<asset>``.

    The files are read here, once; a missing one is a ``FileNotFoundError`` naming it (a
    broken installation), not a 500 at the first visit.
    """
    bodies = {name: _load(name) for name in UI_ASSETS}

    async def page(request: web.Request) -> web.StreamResponse:
        return _asset_response(bodies["index.html"], UI_ASSETS["index.html"])

    async def slash(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("../ui")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in bodies:
            raise web.HTTPNotFound()
        return _asset_response(bodies[name], UI_ASSETS[name])

    return [("GET", "/ui", page), ("GET", "/ui/", slash), ("GET", "/ui/{name}", asset)]
