"""``ron-kernel status``: a running kernel's supervision tree as a table, once or live.

Reads ``GET BASE_URL/status`` (plain ``urllib``: nothing to install). The table is drawn with
``rich`` when it is importable (``pip install 'ron-kernel[cli]'``), else as plain aligned
columns. Every string from the server (child names, crash reasons) is shown with control
characters escaped, so a crash message cannot move the cursor or recolour the terminal.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import orjson

from .._exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

DEFAULT_URL = "http://127.0.0.1:9909"
REFRESH_S = 1.0
REASON_CHARS = 60
COLUMNS = ("CHILD", "STATE", "RESTARTS", "READY", "LAST REASON")
STATE_STYLES = {
    "running": "green", "starting": "cyan", "waiting": "blue", "backing_off": "yellow",
    "probing": "magenta", "quarantined": "bold red", "stopped": "dim",
}


class UsageError(ValueError):
    """A bad ``--url`` (exit 2)."""


class Unreachable(OSError):
    """The kernel did not answer, or answered something that is not a /status document."""


def base_url(url: str) -> str:
    """``url`` checked (``http(s)://host[:port]``, an optional path prefix) without ``/``."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise UsageError(f"--url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {url!r}: expected http://HOST:PORT such as {DEFAULT_URL}")
    if parts.query or parts.fragment:
        raise UsageError(f"--url {url!r}: no query or fragment, just the base URL")
    return url.rstrip("/")


def fetch_status(base: str, timeout: float = 5.0) -> dict[str, Any]:
    """``GET base/status`` as a dict; :class:`Unreachable` saying why when it cannot."""
    try:
        with urllib.request.urlopen(base + "/status", timeout=timeout) as resp:
            body = resp.read(8 << 20)
    except urllib.error.HTTPError as exc:
        raise Unreachable(f"GET {base}/status answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach {base}/status: {reason}") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Unreachable(f"GET {base}/status did not answer JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("supervisor"), dict):
        raise Unreachable(f"GET {base}/status did not answer a kernel status document")
    return data


def clean(value: object, limit: int | None = None) -> str:
    """Text safe for a terminal: one line, control characters escaped, at most ``limit``."""
    text = "" if value is None else str(value)
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def rows(status: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """One row per child, nested supervisors' children indented under their parent.

    Nested children appear when ``/status`` lists them under a child's ``children``.
    """
    services = (status.get("readiness") or {}).get("services") or {}
    out: list[tuple[str, str, str, str, str]] = []

    def walk(children: Mapping[str, Any], depth: int) -> None:
        for name, info in children.items():
            if not isinstance(info, Mapping):
                continue
            ready = services.get(name)
            out.append((
                "  " * depth + clean(name, 40),
                clean(info.get("state", "?")),
                clean(info.get("restarts", "")),
                "yes" if ready is True else "no" if ready is False else "-",
                clean(info.get("last_reason") or "", REASON_CHARS),
            ))
            nested = info.get("children")
            if isinstance(nested, Mapping) and depth < 16:
                walk(nested, depth + 1)

    walk(status.get("supervisor") or {}, 0)
    return out


def summary(status: Mapping[str, Any]) -> list[str]:
    """The lines above the table: kernel state, readiness, config version, loop lag, bus."""
    readiness = status.get("readiness") or {}
    ready = readiness.get("ready")
    missing = readiness.get("missing") or []
    uptime = status.get("uptime_s")
    lines = [
        f"kernel {clean(status.get('state', '?'))}"
        + (f"  up {float(uptime):.0f}s" if isinstance(uptime, int | float) else "")
        + f"  config v{clean(status.get('config_version', '?'))}"
        + f"  ready: {'yes' if ready else 'no'}"
        + (f" (missing: {clean(', '.join(map(str, missing)), 120)})" if missing else ""),
    ]
    loop = status.get("loop")
    if isinstance(loop, Mapping) and loop.get("enabled"):
        lags = "  ".join(f"{key[4:-3]} {clean(loop[key])}ms" for key in
                         ("lag_p50_ms", "lag_p99_ms", "lag_max_ms") if loop.get(key) is not None)
        lines.append(f"loop {lags or 'no samples yet'}  blocks {clean(loop.get('blocks', 0))}")
    bus = status.get("bus")
    if isinstance(bus, Mapping):
        lines.append("bus  " + "  ".join(
            f"{clean(k)} {clean(v)}" for k, v in bus.items()
            if isinstance(v, int | float) and not isinstance(v, bool)))
    return lines


def render_plain(status: Mapping[str, Any]) -> str:
    """The status as plain text: summary lines, then aligned columns."""
    table = [COLUMNS, *rows(status)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = [*summary(status), ""]
    for row in table:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return "\n".join(lines) + "\n"


def render_rich(status: Mapping[str, Any]) -> Any:
    """The status as a rich renderable (needs ``rich``)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, no_wrap=column != "LAST REASON")
    for child, state, restarts, ready, reason in rows(status):
        table.add_row(Text(child), Text(state, style=STATE_STYLES.get(state, "")),
                      Text(restarts), Text(ready, style="green" if ready == "yes" else
                                           "red" if ready == "no" else "dim"),
                      Text(reason, style="red" if reason else ""))
    return Group(*(Text(line) for line in summary(status)), Text(""), table)


def rich_available() -> bool:
    """Whether ``rich`` can be imported (the ``cli`` extra)."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def status_command(url: str, *, watch: bool = False, out: TextIO, err: TextIO,
                   use_rich: bool | None = None, interval: float = REFRESH_S,
                   sleep: Callable[[float], None] = time.sleep) -> int:
    """Print the tree once (exit 0, or 1 when unreachable) or, with ``watch``, every
    ``interval`` seconds until Ctrl-C (exit 0); 2 for a bad URL.

    ``--watch`` redraws in place on a terminal (rich's Live, or clear-screen); into a pipe or
    a file it appends one time-stamped frame per refresh.
    """
    try:
        base = base_url(url)
    except UsageError as exc:
        print(f"ron-kernel status: error: {exc}", file=err)
        return EXIT_USAGE
    fancy = rich_available() if use_rich is None else use_rich
    if not watch:
        try:
            status = fetch_status(base)
        except Unreachable as exc:
            print(f"ron-kernel status: {exc}", file=err)
            return EXIT_FAILURE
        if fancy:
            _console(out).print(render_rich(status))
        else:
            out.write(render_plain(status))
        return EXIT_OK
    try:
        if fancy and out.isatty():  # rich's Live shows only its last frame in a pipe
            _watch_rich(base, out, interval, sleep)
        else:
            _watch_plain(base, out, interval, sleep)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _frame(base: str) -> tuple[Mapping[str, Any] | None, str]:
    try:
        return fetch_status(base), ""
    except Unreachable as exc:
        return None, f"{exc} (retrying every second; Ctrl-C to quit)"


def _console(out: TextIO) -> Any:
    from rich.console import Console

    # a pipe or a file has no width: do not wrap at rich's default 80 columns
    width = None if out.isatty() else 200
    return Console(file=out, highlight=False, soft_wrap=False, width=width)


def _watch_rich(base: str, out: TextIO, interval: float,
                sleep: Callable[[float], None]) -> None:
    from rich.live import Live
    from rich.text import Text

    with Live(console=_console(out), auto_refresh=False) as live:
        while True:
            status, problem = _frame(base)
            live.update(render_rich(status) if status is not None
                        else Text(problem, style="red"), refresh=True)
            sleep(interval)


def _watch_plain(base: str, out: TextIO, interval: float,
                 sleep: Callable[[float], None]) -> None:
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    while True:
        status, problem = _frame(base)
        stamp = time.strftime("%H:%M:%S")
        body = render_plain(status) if status is not None else problem + "\n"
        out.write(f"{clear}{stamp}  {base}\n{body}\n")
        out.flush()
        sleep(interval)
