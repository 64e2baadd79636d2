"""Metrics.serve over real loopback HTTP: endpoints, status codes, bad input, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from ron_kernel import Metrics
from ron_kernel._addr import parse_addr


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def served() -> AsyncIterator[tuple[Metrics, str]]:
    m = Metrics()
    task, (host, port) = await m.serve("127.0.0.1:0")
    yield m, f"http://{host}:{port}"
    await _stop(task)


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_serve_binds_a_real_port_for_port_zero_and_accepts_a_tuple():
    m = Metrics()
    task, (host, port) = await m.serve(("127.0.0.1", 0))
    try:
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port), timeout=2):
            pass
    finally:
        await _stop(task)
    # after cancellation the listener is gone
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=2):
        pass


async def test_a_second_serve_raises_runtime_error(served):
    m, _ = served
    with pytest.raises(RuntimeError, match="already"):
        await m.serve("127.0.0.1:0")


async def test_healthz_is_200_while_the_process_runs(served):
    _, base = served
    async with aiohttp.ClientSession() as s, s.get(base + "/healthz") as r:
        assert r.status == 200
        assert await r.json() == {"alive": True}


async def test_readyz_is_503_with_retry_after_then_200_when_ready(served):
    m, base = served
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/readyz") as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
            body = await r.json()
            assert body["degraded"] is True
            assert body["missing"] == ["no_services"]
            assert body["retry_after"] == 5
        m.health.set("svc-a", True)
        async with s.get(base + "/readyz") as r:
            assert r.status == 200
            body = await r.json()
            assert body["ready"] is True
            assert body["services"] == {"svc-a": True}
            assert body["amnesia"] == "off"
    assert m.counters.request_latency_seconds.count("readyz") == 2


async def test_metrics_is_text_0_0_4_and_openmetrics_when_asked(served):
    _, base = served
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
            assert 'bus_lagged_total{amnesia="off"} 0.0' in text
        accept = "application/openmetrics-text; version=1.0.0"
        async with s.get(base + "/metrics", headers={"Accept": accept}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await r.text()).endswith("# EOF\n")


async def test_head_answers_without_a_body(served):
    _, base = served
    async with aiohttp.ClientSession() as s:
        for path in ("/metrics", "/healthz", "/readyz"):
            async with s.head(base + path) as r:
                assert r.status in (200, 503)
                assert await r.read() == b""


async def test_unknown_paths_are_404_json_and_other_methods_405(served):
    _, base = served
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/nope") as r:
            assert r.status == 404
            assert await r.json() == {"error": "not found", "path": "/nope"}
        async with s.delete(base + "/metrics") as r:
            assert r.status == 405
            assert "GET" in r.headers["Allow"]
            assert (await r.json())["method"] == "DELETE"


async def test_a_method_a_route_does_not_take_is_405_before_its_body_is_judged(served):
    _, base = served
    async with aiohttp.ClientSession() as s:
        for method in ("POST", "PUT", "DELETE", "PATCH", "PROPFIND"):
            async with s.request(method, base + "/readyz", data=b"x" * 100) as r:
                assert r.status == 405, method
                assert "GET" in r.headers["Allow"]
        async with s.post(base + "/nowhere", data=b"x") as r:
            assert r.status == 404


async def test_a_body_on_a_matched_get_is_refused_with_413(served):
    _, base = served
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/metrics", data=b"payload") as r:
            assert r.status == 413


async def test_malformed_http_and_oversized_headers_are_rejected_and_the_server_keeps_serving(
        served):
    _, base = served
    port = int(base.rsplit(":", 1)[1])
    garbage = await _raw(port, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert garbage.split(b" ", 2)[1] == b"400"
    bad_line = await _raw(port, b"NOT A REQUEST LINE\r\n\r\n")
    assert bad_line.split(b" ", 2)[1] == b"400"
    huge = await _raw(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000
                      + b"\r\n\r\n")
    assert huge.split(b" ", 2)[1] in (b"400", b"431")
    long_line = await _raw(port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert long_line.split(b" ", 2)[1] in (b"400", b"414")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    too_many = await _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert too_many.split(b" ", 2)[1] in (b"400", b"431")
    async with aiohttp.ClientSession() as s, s.get(base + "/healthz") as r:
        assert r.status == 200


async def test_a_half_sent_request_is_dropped_after_the_read_timeout():
    m = Metrics()
    task, (host, port) = await m.serve("127.0.0.1:0", read_timeout=0.2)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # server closed it
        writer.close()
    finally:
        await _stop(task)


async def test_extra_routes_are_served_by_the_same_server():
    async def status(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    m = Metrics()
    task, (host, port) = await m.serve("127.0.0.1:0", extra_routes=[("GET", "/status", status)])
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/status") as r:
            assert r.status == 200
            assert await r.json() == {"status": "ok"}
    finally:
        await _stop(task)


async def test_unspecified_addresses_are_refused_unless_asked_for():
    m = Metrics()
    for addr in ("0.0.0.0:0", "[::]:0", ":0"):
        with pytest.raises(ValueError, match="allow_unspecified"):
            await m.serve(addr)
    # a refused addr does not consume the object
    task, (host, _) = await m.serve("0.0.0.0:0", allow_unspecified=True)
    try:
        assert host == "0.0.0.0"
    finally:
        await _stop(task)


BAD_ADDRS = ["localhost", "127.0.0.1:http", "127.0.0.1:70000", "::1:80", "[::1]80",
             ("127.0.0.1",), ("127.0.0.1", "80"), 8080, "127.0.0.1:١٢", "bad host!:80"]


@pytest.mark.parametrize("addr", BAD_ADDRS)
def test_bad_addrs_are_refused_by_the_one_parser(addr):
    with pytest.raises(ValueError):
        parse_addr(addr)  # type: ignore[arg-type]


@pytest.mark.parametrize("addr", BAD_ADDRS)
async def test_serve_names_a_bad_addr(addr):
    with pytest.raises(ValueError, match="observability addr"):
        await Metrics().serve(addr)  # type: ignore[arg-type]


def test_good_addrs_parse():
    assert parse_addr("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_addr("[::1]:0") == ("::1", 0)
    assert parse_addr(("localhost", 0)) == ("localhost", 0)


async def test_a_port_in_use_gets_an_error_naming_the_addr():
    m1, m2 = Metrics(), Metrics()
    task, (_host, port) = await m1.serve("127.0.0.1:0")
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            await m2.serve(f"127.0.0.1:{port}")
    finally:
        await _stop(task)


async def test_scrape_does_not_stop_the_loop_from_answering(served):
    # many series, concurrent /readyz during /metrics scrapes: every request succeeds
    m, base = served
    for i in range(2000):
        m.counters.service_restarts_total.inc(f"svc-{i}")
    async with aiohttp.ClientSession() as s:
        async def get(path: str) -> int:
            async with s.get(base + path) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(get("/metrics" if i % 2 else "/readyz")
                                          for i in range(20)))
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) == 10
