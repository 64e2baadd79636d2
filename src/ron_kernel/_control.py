"""The control routes: ``POST /control/release/<child>``, ``/control/restart/<child>``,
``/control/reload``, guarded by the Bearer token of ``observability.control_token``.

Part of the HTTP layer (only the kernel composes it). Every request is answered in this order,
so nothing is told to whom it should not be:

1. control off (the token is empty): 404, the same answer as an unknown path;
2. a method other than ``POST``: 405 with ``Allow: POST``;
3. a body over :data:`CONTROL_BODY_LIMIT` bytes: 413 (the body is never interpreted);
4. a missing, malformed or wrong ``Authorization: Bearer <token>``: 401 with
   ``WWW-Authenticate: Bearer``; the comparison is constant-time (``hmac.compare_digest`` on
   SHA-256 digests, so not even the token's length leaks);
5. an unknown child: 404 listing the known names (a child of a worker process,
   ``<pool>/<i>/<child>``, is asked of that worker: see ``forward``; 503 when that worker is
   not up or does not answer); an action that does not apply (``release`` of a child that is
   not quarantined, a ``restart`` already running): 409;
6. the action: 200 ``{"ok": true, ...}``; a rejected reload 422 with its problems. A reload is
   the same coalesced, off-loop reload as SIGHUP (``ConfigCell.request_reload``).

Each request counts ``control_requests_total{action,outcome}`` and is logged with the peer
address and what was asked, never with the token. The token is read from the current config on
every request, so a reload rotates it (or turns control off) at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from ._config_cell import ReloadRecord
from ._counters import KernelCounters
from ._http import Handler, accepts_body, read_body
from ._kernel_http import encode_json
from ._logging import get_logger
from ._supervisor import Supervisor, known_names, resolve_child
from ._text import cap, printable

__all__ = ["CONTROL_BODY_LIMIT", "ForwardControl", "Reloader", "control_routes", "resolve_child"]

CONTROL_BODY_LIMIT = 1024
"""The largest request body a control route takes (bytes); the body itself is ignored."""

BODY_DEADLINE = 5.0
"""Seconds a control request's body may take to arrive (then 408)."""
MAX_LISTED_NAMES = 200  # a 404 lists at most this many known names
_REALM = 'Bearer realm="ron-kernel"'
# Unauthorized attempts are logged at most this many times per window; the counter counts all.
UNAUTHORIZED_LOG_BURST = 10
UNAUTHORIZED_LOG_WINDOW = 10.0

_log = get_logger("control")


class Reloader(Protocol):
    """What ``POST /control/reload`` needs of a :class:`~ron_kernel.config.ConfigCell`."""

    def request_reload(self, trigger: str = "request") -> asyncio.Future[bool]:
        """Ask for a reload (read off the loop, coalesced); a future of its outcome."""
        ...

    @property
    def version(self) -> int:
        """Version of the current snapshot."""
        ...

    @property
    def last_reload(self) -> ReloadRecord | None:
        """What the most recent reload did."""
        ...


ForwardControl = Callable[[str, str], Awaitable[Mapping[str, Any]] | None]
"""``forward(action, path)``: the answer of whoever holds ``path`` outside this process's own
tree -- a worker process's child ``<pool>/<i>/<child>`` -- or ``None`` when nobody does. The
answer has ``outcome`` (``ok``, ``conflict``, ``not_found`` or ``unavailable``) and may have
``state``, ``error`` and ``known`` (the holder's child paths, for a 404)."""

_FORWARDED_STATUS = {"ok": 200, "conflict": 409, "not_found": 404, "unavailable": 503}


def _shown(name: str) -> str:
    """A child name from a URL, as it may be echoed back and logged."""
    return cap(printable(name), 200)


class _AuthLog:
    """Logs unauthorized attempts, at most a burst per window; says how many it skipped."""

    def __init__(self) -> None:
        self._window_start = 0.0
        self._logged = 0
        self._skipped = 0

    def __call__(self, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._window_start >= UNAUTHORIZED_LOG_WINDOW:
            self._window_start, self._logged = now, 0
        if self._logged >= UNAUTHORIZED_LOG_BURST:
            self._skipped += 1
            return
        self._logged += 1
        skipped, self._skipped = self._skipped, 0
        if skipped:
            fields["suppressed"] = skipped
        _log.warning("control_unauthorized", **fields)


def _token_digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def control_routes(*, token: Callable[[], str], supervisor: Supervisor, reloader: Reloader,
                   counters: KernelCounters | None,
                   forward: ForwardControl | None = None) -> list[tuple[str, str, Handler]]:
    """The ``(method, path, handler)`` entries of the control routes (``Metrics.serve``).

    ``token`` returns the current ``observability.control_token`` (empty: control off).
    ``forward`` acts on children that are not in ``supervisor``'s tree (worker processes').
    """
    auth_log = _AuthLog()

    def answer(request: web.Request, action: str, outcome: str, status: int,
               body: Mapping[str, Any], child: str | None = None,
               headers: Mapping[str, str] | None = None) -> web.Response:
        if counters is not None:
            counters.control_requests_total.inc(action, outcome)
        fields: dict[str, Any] = {"peer": request.remote or "unknown", "action": action,
                                  "outcome": outcome, "status": status}
        if child is not None:
            fields["child"] = _shown(child)
        if outcome == "unauthorized":
            auth_log(**fields)
        elif outcome == "ok":
            _log.info("control_action", **fields)
        elif outcome != "disabled":  # control off: as quiet as an unknown path
            _log.warning("control_refused", **fields)
        return web.Response(status=status, body=encode_json(dict(body)),
                            content_type="application/json", headers=headers)

    def authorized(request: web.Request, expected: str) -> str | None:
        """``None`` when the Bearer token matches, else what WWW-Authenticate should add."""
        header = request.headers.get("Authorization")
        if header is None:
            return ""
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value or " " in value:
            return ', error="invalid_request"'
        try:
            given = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return ', error="invalid_request"'
        if hmac.compare_digest(_token_digest(given), _token_digest(expected.encode())):
            return None
        return ', error="invalid_token"'

    async def gate(request: web.Request, action: str,
                   child: str | None) -> web.Response | None:
        """Steps 1-4 of the module docstring: a refusal, or ``None`` to go on."""
        expected = token()
        if not expected:
            return answer(request, action, "disabled", 404,
                          {"error": "not found", "path": request.path})
        if request.method != "POST":
            return answer(request, action, "not_allowed", 405,
                          {"error": "method not allowed", "method": request.method,
                           "allowed": ["POST"]}, child, headers={"Allow": "POST"})
        try:
            body = await read_body(request, CONTROL_BODY_LIMIT, within=BODY_DEADLINE)
        except TimeoutError:
            return answer(request, action, "timeout", 408,
                          {"ok": False, "error": "the request body did not arrive in time"},
                          child)
        if body is None:
            return answer(request, action, "too_large", 413,
                          {"ok": False, "error": f"request body over {CONTROL_BODY_LIMIT} "
                                                 "bytes"}, child)
        challenge = authorized(request, expected)
        if challenge is not None:
            return answer(request, action, "unauthorized", 401,
                          {"ok": False, "error": "a valid 'Authorization: Bearer <token>' "
                                                 "header is required"},
                          child, headers={"WWW-Authenticate": _REALM + challenge})
        return None

    def unknown_child(request: web.Request, action: str, child: str) -> web.Response:
        names = known_names(supervisor)
        return answer(request, action, "not_found", 404,
                      {"ok": False, "error": f"no child named {_shown(child)!r}",
                       "known": names[:MAX_LISTED_NAMES],
                       "known_total": len(names)}, child)

    Act = Callable[[web.Request, Supervisor, str], Awaitable[web.Response | None]]

    def child_route(action: str, act: Act) -> Handler:
        @accepts_body(CONTROL_BODY_LIMIT)
        async def handle(request: web.Request) -> web.Response:
            child = request.match_info["child"]
            refused = await gate(request, action, child)
            if refused is not None:
                return refused
            found = resolve_child(supervisor, child)
            if found is None:
                pending = forward(action, child) if forward is not None else None
                if pending is None:
                    return unknown_child(request, action, child)
                return await forwarded(request, action, child, pending)
            sup, name = found
            try:
                refusal = await act(request, sup, name)
            except KeyError:  # the child went away between the lookup and the action
                return unknown_child(request, action, child)
            if refusal is not None:
                return refusal
            info = sup.snapshot().get(name)
            return answer(request, action, "ok", 200,
                          {"ok": True, "action": action, "child": _shown(child),
                           "state": info["state"] if info is not None else None}, child)

        return handle

    async def forwarded(request: web.Request, action: str, child: str,
                        pending: Awaitable[Mapping[str, Any]]) -> web.Response:
        """The answer of the worker process that holds ``child``."""
        # shielded: a client that hangs up must not leave the worker's child half-restarted
        reply = await asyncio.shield(asyncio.ensure_future(pending))
        outcome = reply.get("outcome")
        if outcome not in _FORWARDED_STATUS:
            outcome = "unavailable"
        status = _FORWARDED_STATUS[str(outcome)]
        body: dict[str, Any] = {"ok": outcome == "ok", "action": action,
                                "child": _shown(child), "state": reply.get("state")}
        if outcome != "ok":
            body["error"] = reply.get("error") or f"no answer about {_shown(child)!r}"
        if outcome == "not_found":
            names = [*known_names(supervisor), *reply.get("known", ())]
            body["known"], body["known_total"] = names[:MAX_LISTED_NAMES], len(names)
        return answer(request, action, str(outcome), status, body, child)

    def conflict(request: web.Request, action: str, sup: Supervisor, name: str,
                 error: str) -> web.Response:
        child = request.match_info["child"]
        info = sup.snapshot().get(name)
        return answer(request, action, "conflict", 409,
                      {"ok": False, "error": error, "child": _shown(child),
                       "state": info["state"] if info is not None else None}, child)

    async def release(request: web.Request, sup: Supervisor, name: str) -> web.Response | None:
        if sup.release(name):
            return None
        return conflict(request, "release", sup, name,
                        f"child {_shown(name)!r} is not quarantined")

    async def restart(request: web.Request, sup: Supervisor, name: str) -> web.Response | None:
        # Shielded: a client that hangs up must not leave the child stopped half-way.
        task = asyncio.ensure_future(sup.restart(name))
        try:
            await asyncio.shield(task)
        except RuntimeError as exc:
            return conflict(request, "restart", sup, name, str(exc))
        return None

    @accepts_body(CONTROL_BODY_LIMIT)
    async def reload_handler(request: web.Request) -> web.Response:
        refused = await gate(request, "reload", None)
        if refused is not None:
            return refused
        before = reloader.version
        # the same coalesced, off-loop reload as SIGHUP; shielded so a client hanging up
        # does not cancel a reload other requesters wait for
        future = reloader.request_reload("control")
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.cancelled():
                raise  # this handler was cancelled, not the reload
            return answer(request, "reload", "shutting_down", 503,
                          {"ok": False, "error": "the kernel is shutting down; no reload"})
        record = reloader.last_reload
        if record is not None and record.outcome == "rejected":
            return answer(request, "reload", "rejected", 422,
                          {"ok": False, "error": "config reload rejected; the previous "
                                                 "config is kept", "version": record.version,
                           "problems": list(record.problems)})
        after = reloader.version
        return answer(request, "reload", "ok", 200,
                      {"ok": True, "action": "reload",
                       "outcome": "applied" if after != before else "unchanged",
                       "version": after})

    return [("*", "/control/release/{child:.+}", child_route("release", release)),
            ("*", "/control/restart/{child:.+}", child_route("restart", restart)),
            ("*", "/control/reload", reload_handler)]
