"""``ron-kernel tasks``: print a running kernel's ``GET /debug/tasks`` as a table.

Plain standard library (``urllib``), no event loop: the command is one request and a print.
The kernel must run with ``observability.debug_endpoints = true`` and the command must reach it
over loopback (the endpoint answers loopback peers only).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = ["DEFAULT_URL", "fetch_tasks", "format_table", "tasks"]

DEFAULT_URL = "http://127.0.0.1:9909"
PATH = "/debug/tasks"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_COLUMNS = ("NAME", "CHILD", "STATE", "CORO", "WHERE")
_WIDEST = 60  # a cell longer than this is cut (with "...")


def tasks_url(url: str) -> str:
    """``BASE_URL/debug/tasks`` (a URL already ending in ``/debug/tasks`` is kept).

    Raises ``ValueError`` saying why for anything but an ``http(s)://host[:port][/path]`` URL.
    """
    text = url.strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the kernel's base URL, without ?query or #fragment")
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def fetch_tasks(url: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """GET the task dump at ``url`` (already a ``/debug/tasks`` URL) and return it.

    Proxies from the environment are ignored (the endpoint is loopback only). Raises
    ``urllib.error.URLError`` / ``OSError`` when the server is unreachable or answers an error
    (``HTTPError`` carries the status), ``ValueError`` when the body is not a task list.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, headers={"Accept": "application/json"}),
                     timeout=timeout) as resp:
        body = json.loads(resp.read())
    if not isinstance(body, list) or not all(isinstance(t, Mapping) for t in body):
        raise ValueError("the answer is not a JSON list of tasks")
    return [dict(t) for t in body]


def _cell(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text if len(text) <= _WIDEST else text[:_WIDEST - 3] + "..."


def _where(stack: object) -> str:
    """The innermost frame, with the file shortened to its name."""
    if not isinstance(stack, Sequence) or isinstance(stack, str) or not stack:
        return "-"
    location, _, function = str(stack[0]).partition(" ")
    return f"{location.rsplit('/', 1)[-1]} {function}".strip()


def format_table(rows: Sequence[Mapping[str, Any]], *, stacks: bool = False) -> list[str]:
    """The dump as text lines: a header, one row per task, and with ``stacks`` every frame.

    Columns: NAME, CHILD (the supervised child owning the task), STATE, CORO (the task's
    coroutine) and WHERE (innermost frame, file name only). With ``stacks`` each row is followed
    by its whole stack, innermost frame first, full paths.
    """
    table = [_COLUMNS] + [
        (_cell(r.get("name")), _cell(r.get("child")), _cell(r.get("state")),
         _cell(r.get("coro")), _cell(_where(r.get("stack"))))
        for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    out = []
    for index, line in enumerate(table):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                   .rstrip())
        if stacks and index > 0:
            stack = rows[index - 1].get("stack") or []
            out.extend(f"    {frame}" for frame in stack)
    return out


def tasks(url: str, *, out: TextIO, err: TextIO, stacks: bool = False,
          timeout: float = 5.0) -> int:
    """Print the task table of the kernel at ``url``; return the exit status.

    0: printed (the last line counts the tasks). 1: the kernel is unreachable or refused
    (debug endpoints off → 404, not a loopback peer → 403), or the answer was not a task
    list. 2: ``url`` is malformed.
    """
    try:
        target = tasks_url(url)
    except ValueError as exc:
        print(f"tasks: {exc}", file=err)
        return EXIT_USAGE
    try:
        rows = fetch_tasks(target, timeout=timeout)
    except urllib.error.HTTPError as exc:
        hint = {404: " (is observability.debug_endpoints = true on that kernel?)",
                403: " (the endpoint answers loopback peers only)"}.get(exc.code, "")
        print(f"tasks: GET {target} answered {exc.code}{hint}", file=err)
        return EXIT_FAILURE
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"tasks: cannot reach {target}: {reason}", file=err)
        return EXIT_FAILURE
    except ValueError as exc:  # includes a body that is not JSON
        print(f"tasks: GET {target}: {exc}", file=err)
        return EXIT_FAILURE
    for line in format_table(rows, stacks=stacks):
        print(line, file=out)
    children = sum(1 for r in rows if r.get("child"))
    print(f"{len(rows)} tasks, {children} owned by supervised children", file=out)
    return EXIT_OK
