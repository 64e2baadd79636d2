"""``ron-kernel tail``: follow a kernel's ``/events`` stream and print one JSON line per event."""

from __future__ import annotations

import asyncio
import random
import sys
from typing import TextIO
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
