"""Fault class: attacker-controlled text on the operator's page.

Child names and crash reasons are whatever a service (or its input) puts there: they reach the
operator through ``/events`` (NDJSON and Server-Sent Events), ``/status`` and the ``/ui`` page.

Rule: that text is data everywhere. It cannot forge or split an SSE frame (newlines, CR,
``event:``/``data:`` lines, NUL, U+2028 stay inside one JSON string of one ``data:`` line); it
is served as JSON, never HTML; every ``/ui`` answer carries a Content-Security-Policy without
inline script and ``nosniff``; the page writes it with ``textContent`` only. Tried here: an SSE
frame injection through a crash reason and a child name, from a real crashing child and a
direct publish. The browser side (``<img src=x onerror=alert(1)>`` in a name and a reason,
nothing runs, the text is shown) is
``tests/test_ui_browser.py::test_attacker_controlled_name_and_reason_are_shown_never_run``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from _faults_support import until

from ron_kernel import KernelEvent
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ChildContext

ARGV = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0"]
FORGED = ('x\n\nevent: lagged\ndata: {"type":"Lagged","missed":999}\n\n'
          'data: {"type":"Shutdown"}\r\rid: 7\r\nretry: 1\n: comment\u2028\u0085\x00 <script>')


def _frames(raw: bytes) -> list[list[bytes]]:
    """The SSE frames of a stream, by the WHATWG rules: CRLF, LF and CR all end a line."""
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    frames, current = [], []
    for line in lines:
        if line == b"":
            if current:
                frames.append(current)
            current = []
        else:
            current.append(line)
    return frames


async def test_crash_text_cannot_forge_or_split_sse_frames(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def crasher(ctx: ChildContext) -> None:
        ctx.ready()
        await asyncio.sleep(0.05)
        raise RuntimeError(FORGED)

    async with Kernel(env={}, argv=[*ARGV, "--sup-min-backoff", "10s"], watch_config=False,
                      handle_sighup=False) as k, aiohttp.ClientSession() as http:
        resp = await http.get(k.urls()["events"] + "?format=sse")
        raw = bytearray()

        async def read() -> None:
            async for chunk in resp.content.iter_any():
                raw.extend(chunk)
        reader = asyncio.ensure_future(read())
        await until(lambda: k.bus.receiver_count == 1 and b"\n\n" in raw)
        k.bus.publish(KernelEvent.ServiceCrashed(service=FORGED, reason=FORGED))
        k.supervise("child\nevent: lagged", crasher)
        await until(lambda: raw.count(b"ServiceCrashed") >= 2)
        await k.shutdown()
        await asyncio.wait_for(reader, 5)
        resp.close()
    frames = _frames(bytes(raw))
    head, events = frames[0], frames[1:]
    assert head == [b"retry: 1000", b": ron-kernel events"]
    # every frame is exactly one data line: nothing the text carried became a field
    assert all(len(f) == 1 and f[0].startswith(b"data: ") for f in events), events
    decoded = [orjson.loads(f[0][len(b"data: "):]) for f in events]
    crashed = [e for e in decoded if e["type"] == "ServiceCrashed"]
    assert crashed[0] == {"type": "ServiceCrashed", "service": FORGED, "reason": FORGED}
    assert crashed[1]["service"] == "child\nevent: lagged"
    assert FORGED in crashed[1]["reason"]
    assert decoded[-1] == {"type": "Shutdown"}
    assert sum(e["type"] == "Shutdown" for e in decoded) == 1  # the forged one stayed text
    lines = bytes(raw).replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    assert not [line for line in lines
                if line.startswith((b"event:", b"id:")) or line == b"retry: 1"]


async def test_the_page_and_status_serve_that_text_as_data_never_as_html(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with Kernel(env={}, argv=ARGV, watch_config=False, handle_sighup=False) as k, \
            aiohttp.ClientSession() as http:
        k.bus.publish(KernelEvent.ServiceCrashed(service=FORGED, reason=FORGED))
        async with http.get(k.urls()["status"]) as resp:
            assert resp.content_type == "application/json"
        for path in ("/ui", "/ui/app.js", "/ui/style.css"):
            async with http.get(k.urls()["base"] + path) as resp:
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
