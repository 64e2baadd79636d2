"""``ron-kernel tail``: one JSON line per event, from a kernel's ``/events`` or the whole fleet.

``tail --url`` follows one kernel over HTTP (:func:`tail`); ``tail --nats`` follows every
kernel of a fleet over NATS (:func:`tail_nats`, the ``nats`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import random
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import orjson

from .._exitcodes import EXIT_FAILURE, EXIT_OK

DEFAULT_URL = "http://127.0.0.1:9909"


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a kernel's observability address, or ``None`` when it can.

    ``http://`` or ``https://``, a host, a port from 1 to 65535 when one is given: anything
    else is a usage error, not something to retry forever.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number, a bad IPv6 literal
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        return f"has {shown}; expected http:// or https://, e.g. {DEFAULT_URL}"
    if not parts.hostname:
        return f"has no host; expected e.g. {DEFAULT_URL}"
    if port == 0:
        return "has port 0; expected a port from 1 to 65535"
    return None


async def tail(url: str = DEFAULT_URL, *, retry: bool = True, out: TextIO | None = None,
               err: TextIO | None = None, max_backoff: float = 5.0,
               max_attempts: int | None = None) -> int:
    """Print every event of ``url``/events until a ``Shutdown`` event; return the exit status.

    Returns 0 after printing ``Shutdown``. A connection that ends without one is retried with
    jittered exponential backoff (capped at ``max_backoff`` seconds), or, with ``retry=False``,
    ends the command with status 1. Lag notices from the server (``{"type":"Lagged",...}``) go
    to ``err`` so ``out`` holds only kernel events. ``ValueError`` at once for a ``url`` that
    cannot be an observability address (:func:`check_url`).
    """
    why = check_url(url)
    if why is not None:
        raise ValueError(f"url {url!r} {why}")
    out = out or sys.stdout
    err = err or sys.stderr
    events_url = url.strip().rstrip("/") + "/events"
    attempt = 0
    timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                async with session.get(events_url) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(
                            resp.request_info, resp.history, status=resp.status,
                            message=f"GET {events_url} answered {resp.status}")
                    attempt = 0
                    async for raw in resp.content:
                        line = raw.strip()
                        if not line:
                            continue
                        try:
                            kind = orjson.loads(line).get("type")
                        except (orjson.JSONDecodeError, AttributeError):
                            print(f"tail: ignoring a malformed line: {line[:80]!r}", file=err)
                            continue
                        if kind == "Lagged":
                            print(line.decode(), file=err, flush=True)
                            continue
                        print(line.decode(), file=out, flush=True)
                        if kind == "Shutdown":
                            return EXIT_OK
                reason = "the stream ended without a Shutdown event"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if not retry:
                print(f"tail: {reason}", file=err)
                return EXIT_FAILURE
            attempt += 1
            if max_attempts is not None and attempt > max_attempts:
                print(f"tail: giving up after {max_attempts} attempts: {reason}", file=err)
                return EXIT_FAILURE
            delay = random.uniform(0.1, min(max_backoff, 0.1 * 2 ** attempt))
            print(f"tail: {reason}; retrying in {delay:.2f}s", file=err, flush=True)
            await asyncio.sleep(delay)


# ------------------------------------------------------------------------ the fleet: tail --nats


def literal_node(glob: str) -> str | None:
    """The node name a ``--node`` glob matches exactly, or ``None`` when it has wildcards."""
    return None if any(c in glob for c in "*?[") else glob


async def tail_nats(url: str, *, node: str = "*", prefix: str = "ron",
                    out: TextIO | None = None, err: TextIO | None = None,
                    stop: asyncio.Event | None = None) -> int:
    """Follow every node's events on NATS (``<prefix>.>``); one JSON line per event, 0 at the end.

    Lines are the wire form: the flat INTEROP JSON plus ``"node"``, ``"seq"`` and ``"ts"``.
    ``node`` is a shell-style glob on node names (``web-*``). A gap in a node's ``seq`` prints
    ``{"type":"Lagged","node":...,"missed":N}`` on ``err``; malformed messages are skipped
    (counted, not printed). Runs until SIGINT/SIGTERM (or ``stop`` is set), then returns 0.
    An unreachable server is retried (nats-py's reconnect), with one notice on ``err``.
    ``url`` must already be valid (see ``check_nats_url``).
    """
    from nats.aio.client import Client

    from .._fleet import Fleet, FleetLagged
    from .._redact import redact_text
    from .._signals import wait_for_ctrl_c

    out = out or sys.stdout
    err = err or sys.stderr
    shown = redact_text(url)
    fleet = Fleet(own_node=None, prefix=prefix)
    rx = fleet.subscribe()
    exact = literal_node(node)
    subject = f"{prefix}.{exact}.>" if exact is not None else f"{prefix}.>"
    reported: set[str] = set()

    async def on_error(exc: Exception) -> None:
        text = redact_text(f"{type(exc).__name__}: {exc}")
        if text not in reported and len(reported) < 100:  # one notice per distinct problem
            reported.add(text)
            print(f"tail: {shown}: {text}; retrying", file=err, flush=True)

    async def on_msg(msg: Any) -> None:
        fleet.receive(msg.subject, msg.data)

    async def follow() -> None:
        while True:
            try:
                remote = await rx.recv_remote()
            except FleetLagged as lag:
                if lag.node is None or fnmatch.fnmatchcase(lag.node, node):
                    gap = {"type": "Lagged", "node": lag.node, "missed": lag.missed}
                    print(orjson.dumps(gap).decode(), file=err, flush=True)
                continue
            if fnmatch.fnmatchcase(remote.node, node):
                print(remote.to_json(), file=out, flush=True)

    async def connect(nc: Client) -> None:
        await nc.connect([part.strip() for part in url.split(",")], name="ron-kernel tail",
                         allow_reconnect=True, max_reconnect_attempts=-1,
                         reconnect_time_wait=1, connect_timeout=2, error_cb=on_error)
        await nc.subscribe(subject, cb=on_msg)
        print(f"tail: following {subject} on {shown} (Ctrl-C to stop)", file=err, flush=True)

    nc = Client()
    waiters = [asyncio.ensure_future(stop.wait() if stop is not None else wait_for_ctrl_c()),
               asyncio.ensure_future(connect(nc)), asyncio.ensure_future(follow())]
    try:
        while True:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if waiters[0] in done:
                break
            for task in done:  # connect() finished; follow() only ends by an error
                failure = task.exception()
                if failure is not None:
                    print(f"tail: {shown}: {redact_text(str(failure))}", file=err)
                    return EXIT_FAILURE
            waiters = [w for w in waiters if not w.done() or w is waiters[0]]
    finally:
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2.0)
        rx.close()
    return EXIT_OK
