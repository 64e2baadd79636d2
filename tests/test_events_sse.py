"""``GET /events`` as Server-Sent Events, in process over loopback HTTP (both loops).

The SSE stream is the NDJSON stream in other frames: the same JSON per event in one ``data:``
line, ``event: lagged`` when a client falls behind, comment lines as keep-alives, and the same
end (``Shutdown`` delivered, then EOF) when the kernel drains.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ron_kernel import Config, KernelEvent, _kernel_http
from ron_kernel.kernel import Kernel

HTTP = {"observability": {"expose_http": True, "addr": "127.0.0.1:0"}}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield


def _kernel(**sections: Any) -> Kernel:
    return Kernel(Config.from_mapping({**HTTP, **sections}), env={}, watch_config=False,
                  handle_sighup=False)


async def _until(check: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


class SSEReader:
    """A minimal SSE parser (the WHATWG rules this kernel needs): frames split by blank lines,
    ``event:``/``data:``/``retry:`` fields, ``:`` comments."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []  # (event name, data)
        self.comments: list[str] = []
        self.retry: int | None = None
        self.raw = b""
        self.eof = False

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(data) for name, data in self.events if name == "message"]

    async def follow(self, resp: aiohttp.ClientResponse) -> None:
        buf = b""
        name, data = "message", []
        async for chunk in resp.content.iter_any():
            self.raw += chunk
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode()
                if text == "":
                    if data:
                        self.events.append((name, "\n".join(data)))
                    name, data = "message", []
                elif text.startswith(":"):
                    self.comments.append(text[1:].strip())
                else:
                    field, _, value = text.partition(":")
                    value = value.removeprefix(" ")
                    if field == "data":
                        data.append(value)
                    elif field == "event":
                        name = value
                    elif field == "retry":
                        self.retry = int(value)
        self.eof = True


async def _open(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[
        aiohttp.ClientResponse, SSEReader, asyncio.Task[None]]:
    resp = await http.get(url, **kwargs)
    reader = SSEReader()
    task = asyncio.ensure_future(reader.follow(resp))
    return resp, reader, task


async def test_accept_header_and_format_query_both_select_sse_with_the_ndjson_json():
    k = _kernel()
    await k.start()
    url = k.urls()["events"]
    async with aiohttp.ClientSession() as http:
        by_header = await _open(http, url, headers={"Accept": "text/event-stream"})
        by_query = await _open(http, url + "?format=sse")
        ndjson = await http.get(url)
        for resp, _, _ in (by_header, by_query):
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            assert resp.headers["Cache-Control"] == "no-store"
        assert ndjson.content_type == "application/x-ndjson"
        await _until(lambda: k.bus.receiver_count >= 3)
        events = [KernelEvent.ServiceCrashed(service="w", reason='multi\nline "quoted"'),
                  KernelEvent.Health(service="w", ok=False),
                  KernelEvent.ConfigUpdated(version=4)]
        for event in events:
            k.bus.publish(event)
        await _until(lambda: len(by_header[1].messages()) >= 3
                     and len(by_query[1].messages()) >= 3)
        lines = [orjson.loads(await ndjson.content.readline()) for _ in events]
        expected = [orjson.loads(e.to_json()) for e in events]
        assert by_header[1].messages() == expected == by_query[1].messages() == lines
        # one data line per event: JSON escapes the newline in the reason
        assert by_query[1].raw.count(b"data: ") == 3
        # the stream opens with the reconnect hint and a comment
        assert by_query[1].retry == _kernel_http.SSE_RETRY_MS
        assert by_query[1].comments[0] == "ron-kernel events"
        # every message decodes back to the event
        assert [KernelEvent.from_json(d) for n, d in by_query[1].events] == events
        ndjson.close()
        await k.shutdown()
        await asyncio.wait_for(asyncio.gather(by_header[2], by_query[2]), 5)
    assert by_query[1].messages()[-1] == {"type": "Shutdown"}
    assert by_query[1].eof


async def test_format_ndjson_wins_over_accept_and_an_unknown_format_is_400():
    k = _kernel()
    async with k, aiohttp.ClientSession() as http:
        url = k.urls()["events"]
        resp = await http.get(url + "?format=ndjson", headers={"Accept": "text/event-stream"})
        assert resp.content_type == "application/x-ndjson"
        resp.close()
        async with http.get(url + "?format=<b>xml</b>") as bad:
            assert bad.status == 400
            body = await bad.json()
            assert body == {"error": "unknown format", "format": "<b>xml</b>",
                            "accepted": ["ndjson", "sse"]}


async def test_a_client_that_falls_behind_gets_a_lagged_event_then_continues():
    k = _kernel(bus={"capacity": 16})
    await k.start()
    async with aiohttp.ClientSession() as http:
        resp, reader, task = await _open(http, k.urls()["events"] + "?format=sse")
        await _until(lambda: k.bus.receiver_count >= 1)
        await _until(lambda: reader.retry is not None)  # the stream is being served
        # 40 publishes without yielding: the stream's receiver is 24 behind the ring of 16
        for i in range(40):
            k.bus.publish(KernelEvent.ConfigUpdated(version=i))
        await _until(lambda: any(n == "lagged" for n, _ in reader.events)
                     and len(reader.messages()) >= 16)
        lagged = [orjson.loads(d) for n, d in reader.events if n == "lagged"]
        assert lagged == [{"type": "Lagged", "missed": 24}]
        # it continues from the oldest retained event, in order
        assert [m["version"] for m in reader.messages()] == list(range(24, 40))
        # the lag is not a "message": EventSource.onmessage only ever sees KernelEvents
        assert all(m["type"] != "Lagged" for m in reader.messages())
        await k.shutdown()
        await asyncio.wait_for(task, 5)
        resp.close()


async def test_keepalive_comments_flow_while_nothing_happens(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_kernel_http.SSE, "keepalive", 0.05)
    k = _kernel()
    await k.start()
    async with aiohttp.ClientSession() as http:
        resp, reader, task = await _open(http, k.urls()["events"] + "?format=sse")
        await _until(lambda: reader.comments.count("keep-alive") >= 3)
        # an event still arrives between keep-alives (the timeout consumed nothing)
        k.bus.publish(KernelEvent.Health(service="x", ok=True))
        await _until(lambda: reader.messages() == [{"type": "Health", "service": "x",
                                                     "ok": True}])
        await k.shutdown()
        await asyncio.wait_for(task, 5)
        resp.close()


async def test_shutdown_waits_for_sse_streams_and_they_end_after_shutdown():
    k = _kernel()
    await k.start()
    async with aiohttp.ClientSession() as http:
        opened = [await _open(http, k.urls()["events"] + "?format=sse") for _ in range(3)]
        await _until(lambda: k.bus.receiver_count >= 3)
        await k.shutdown()
        # shutdown returned: every stream had its Shutdown and its end already
        assert not k._streams
        for resp, reader, task in opened:
            await asyncio.wait_for(task, 5)
            assert reader.messages() == [{"type": "Shutdown"}]
            assert reader.eof
            resp.close()
    assert k.bus.receiver_count == 0


async def test_a_client_that_leaves_releases_its_receiver():
    k = _kernel()
    async with k, aiohttp.ClientSession() as http:
        resp, reader, task = await _open(http, k.urls()["events"] + "?format=sse")
        await _until(lambda: k.bus.receiver_count == 1 and reader.retry is not None)
        task.cancel()
        resp.close()
        # the next write notices the closed connection and the stream ends
        async def gone() -> bool:
            k.bus.publish(KernelEvent.Health(service="x", ok=True))
            await asyncio.sleep(0.02)
            return k.bus.receiver_count == 0
        deadline = time.monotonic() + 5
        while not await gone():
            assert time.monotonic() < deadline, "the receiver of a gone client stayed"
        assert not k._streams


async def test_no_stream_no_receiver_no_work():
    # The page costs nothing when nobody watches: no receiver exists until a client connects.
    k = _kernel()
    async with k:
        for _ in range(1000):
            k.bus.publish(KernelEvent.Health(service="x", ok=True))
        assert k.bus.receiver_count == 0
        assert k.bus.stats().no_receivers >= 1000


async def test_sse_is_paced_a_flood_reaches_it_as_lagged_while_ndjson_keeps_up(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_kernel_http.SSE, "pace", 0.5)  # one write, then half a second
    k = _kernel(bus={"capacity": 64})
    await k.start()
    async with aiohttp.ClientSession() as http:
        resp, reader, task = await _open(http, k.urls()["events"] + "?format=sse")
        ndjson = await http.get(k.urls()["events"])
        lines: list[dict[str, Any]] = []

        async def read_ndjson() -> None:
            async for raw in ndjson.content:
                lines.append(orjson.loads(raw))
        nd_task = asyncio.ensure_future(read_ndjson())
        await _until(lambda: k.bus.receiver_count >= 2 and reader.retry is not None)
        total = 0
        for _ in range(20):  # 1,280 events in ~0.1 s, in bursts of the ring's size
            for _ in range(64):
                k.bus.publish(KernelEvent.ConfigUpdated(version=total))
                total += 1
            await asyncio.sleep(0.005)
        await k.shutdown()
        await asyncio.wait_for(asyncio.gather(task, nd_task), 5)
        resp.close()
        ndjson.close()
    # NDJSON: every event, in order, never lagged
    assert [e["version"] for e in lines if e["type"] == "ConfigUpdated"] == list(range(total))
    assert all(e["type"] != "Lagged" for e in lines)
    # SSE: fewer writes, so it fell behind; every event is either delivered or counted missed
    missed = sum(orjson.loads(d)["missed"] for n, d in reader.events if n == "lagged")
    delivered = [m["version"] for m in reader.messages() if m["type"] == "ConfigUpdated"]
    assert missed > 0
    assert len(delivered) + missed == total
    assert delivered == sorted(delivered) and delivered[-1] == total - 1
    assert reader.messages()[-1] == {"type": "Shutdown"}


def test_each_event_is_encoded_once_for_every_stream():
    encoded = _kernel_http.EncodedEvents(limit=4)
    events = [KernelEvent.Health(service=f"s{i}", ok=True) for i in range(6)]
    first = encoded.json(events[0])
    assert first == events[0].to_json().encode()
    assert encoded.json(events[0]) is first  # the second stream gets the same bytes
    # an equal but distinct event is not mistaken for the cached one (identity, not equality)
    twin = KernelEvent.Health(service="s0", ok=True)
    assert encoded.json(twin) == first and encoded.json(twin) is not first
    for event in events:  # past the limit it starts again: bounded
        encoded.json(event)
    assert len(encoded._entries) <= 4
    with pytest.raises(AttributeError):
        encoded.json(object())  # what is not an event raises; the stream skips and counts it
