"""``ron-kernel ctl release|restart NAME`` and ``ron-kernel ctl reload``: the control routes.

The token comes from an environment variable (``RONK_CONTROL_TOKEN``, or the one named by
``--token-env``), never from the command line, where other users could read it in ``ps``. It is
sent as ``Authorization: Bearer <token>`` and never printed. Exit 0 when the kernel did it, 1
when it refused (the server's reason is printed) or could not be reached, 2 for usage errors
(a bad URL, no token).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

from .._exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .status import UsageError, base_url, clean

TOKEN_ENV = "RONK_CONTROL_TOKEN"
TIMEOUT_S = 60.0  # a restart waits for the child's drain (shutdown_timeout, 5 s by default)


def control_url(base: str, action: str, name: str | None) -> str:
    """The URL of one control action; ``name`` is percent-encoded, ``/`` kept for nesting."""
    if name is None:
        return f"{base}/control/{action}"
    return f"{base}/control/{action}/{urllib.parse.quote(name, safe='/')}"


def _refusal(status: int, body: Mapping[str, Any]) -> str:
    error = clean(body.get("error") or f"HTTP {status}", 300)
    if status == 404 and "known" not in body:
        return ("the kernel has no control routes here: observability.control_token is not "
                "set on it (or the URL is not the kernel's)")
    if status == 404:
        known = [clean(n, 80) for n in body.get("known") or []]
        return f"{error}; known: {', '.join(known) or 'none'}"
    if status == 422 and body.get("problems"):
        return error + "".join(f"\n  - {clean(p, 300)}" for p in body["problems"][:20])
    return error


def ctl_command(action: str, name: str | None, url: str, *, token_env: str = TOKEN_ENV,
                env: Mapping[str, str] | None = None, out: TextIO, err: TextIO) -> int:
    """Run one control action against the kernel at ``url``; return the exit status."""
    prog = f"ron-kernel ctl {action}"
    try:
        base = base_url(url)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=err)
        return EXIT_USAGE
    token = (os.environ if env is None else env).get(token_env, "")
    if not token:
        print(f"{prog}: error: no token: set {token_env} to the kernel's "
              "observability.control_token", file=err)
        return EXIT_USAGE
    target = control_url(base, action, name)
    request = urllib.request.Request(target, data=b"", method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            status, raw = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        print(f"{prog}: cannot reach {base}: {getattr(exc, 'reason', exc)}", file=err)
        return EXIT_FAILURE
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status == 200 and body.get("ok") is True:
        if action == "reload":
            print(f"reload: {clean(body.get('outcome'))} (config version "
                  f"{clean(body.get('version'))})", file=out)
        else:
            print(f"{action} {clean(body.get('child', name))}: ok (state "
                  f"{clean(body.get('state'))})", file=out)
        return EXIT_OK
    print(f"{prog}: refused (HTTP {status}): {_refusal(status, body)}", file=err)
    return EXIT_FAILURE
