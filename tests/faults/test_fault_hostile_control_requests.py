"""Fault class: hostile control requests.

Rule: whatever arrives at ``/control/*`` -- a flood of wrong tokens, bodies too large, chunked
or trickling in, malformed ``Authorization`` headers, child names that are paths, escapes or
huge -- the kernel keeps answering ``/readyz``, the right token keeps working, every refusal is
a JSON answer with its status (never a 500), the token never appears in a log line, and the log
stays bounded (unauthorized attempts are logged at most a burst per window, all counted).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
from _faults_support import until

from ron_kernel import _control, _logging
from ron_kernel.kernel import Kernel
from ron_kernel.logging import configure_logging
from ron_kernel.supervisor import ChildContext

TOKEN = "flood-test-control-token-0123456789"
ARGV = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(stream=out)
    yield out
    _logging.reset_logging()


@asynccontextmanager
async def _kernel() -> AsyncIterator[tuple[Kernel, str, dict[str, int]]]:
    starts = {"worker": 0}

    async def worker(ctx: ChildContext) -> None:
        starts["worker"] += 1
        ctx.ready()
        await ctx.shutdown.wait()

    k = Kernel(env={"RONK_CONTROL_TOKEN": TOKEN}, argv=ARGV, watch_config=False,
               handle_sighup=False)
    k.supervise("worker", worker)
    async with k:
        await until(k.health.all_ready)
        yield k, k.urls()["base"], starts


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await asyncio.wait_for(reader.readexactly(length), 10.0)


async def test_ten_thousand_wrong_tokens_leave_readyz_answering_and_the_right_token_working(
        log):
    total, batch = 10_000, 250
    async with _kernel() as (k, base, starts), aiohttp.ClientSession() as s:
        host, port = k.http_addr or ("", 0)
        reader, writer = await asyncio.open_connection(host, port)
        started = time.monotonic()
        try:
            sent = 0
            while sent < total:
                assert time.monotonic() - started < 90, "the flood took too long"
                # pipelined on one keep-alive connection: the cheapest client there is
                writer.write(b"".join(
                    b"POST /control/restart/worker HTTP/1.1\r\nHost: k\r\nAuthorization: "
                    b"Bearer wrong-token-%08d\r\nContent-Length: 0\r\n\r\n" % (sent + i)
                    for i in range(batch)))
                await writer.drain()
                for _ in range(batch):
                    status, body = await _read_response(reader)
                    assert status == 401, body
                sent += batch
                if sent % 2_000 == 0:
                    async with s.get(base + "/readyz",
                                     timeout=aiohttp.ClientTimeout(total=5)) as r:
                        assert r.status == 200
        finally:
            writer.close()
        elapsed = time.monotonic() - started
        counted = k.metrics.counters.control_requests_total
        assert counted.get("restart", "unauthorized") == total
        async with s.get(base + "/readyz") as r:
            assert r.status == 200
        async with s.post(base + "/control/restart/worker",
                          headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        assert starts["worker"] == 2
    print(f"\n10,000 wrong-token requests in {elapsed:.2f}s ({total / elapsed:,.0f}/s)")
    lines = [orjson.loads(line) for line in log.getvalue().splitlines()]
    noted = [line for line in lines if line["event"] == "control_unauthorized"]
    windows = int(elapsed // _control.UNAUTHORIZED_LOG_WINDOW) + 1
    assert 1 <= len(noted) <= _control.UNAUTHORIZED_LOG_BURST * windows
    assert TOKEN not in log.getvalue()


async def test_odd_child_names_are_404_json_with_the_name_bounded(log):
    async with _kernel() as (_, base, _), aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for raw in ("..%2F..%2Fetc%2Fpasswd", "%00", "%ff%fe", "a" * 3000, "worker%2F",
                    "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", "worker/", "/worker"):
            url = aiohttp.client.URL(f"{base}/control/release/{raw}", encoded=True)
            async with s.post(url, headers=auth) as r:
                assert r.status == 404, raw
                body = orjson.loads(await r.read())
                assert body["known"] == ["worker"]
                assert len(body["error"]) < 300
    assert "a" * 300 not in log.getvalue()


async def test_a_body_that_trickles_in_is_408_and_a_huge_one_is_never_read(
        log, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_control, "BODY_DEADLINE", 0.3)
    async with _kernel() as (k, _, starts):
        host, port = k.http_addr or ("", 0)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"POST /control/reload HTTP/1.1\r\nHost: k\r\nContent-Length: 100\r\n"
                         b"\r\n0123456789")  # 10 of 100 bytes, then nothing
            await writer.drain()
            status, body = await _read_response(reader)
            assert status == 408 and b"in time" in body
        finally:
            writer.close()
        reader, writer = await asyncio.open_connection(host, port)
        try:  # declares 1 GiB, sends a little: refused at once from the declared length
            writer.write(b"POST /control/reload HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer "
                         + TOKEN.encode() + b"\r\nContent-Length: 1073741824\r\n\r\nxx")
            await writer.drain()
            status, _ = await _read_response(reader)
            assert status == 413
        finally:
            writer.close()
        assert k.config.version == 1 and starts["worker"] == 1
        counted = k.metrics.counters.control_requests_total
        assert (counted.get("reload", "timeout"), counted.get("reload", "too_large")) == (1, 1)


@pytest.mark.parametrize("header", [
    b"Bearer \xff\xfe-not-utf8-token-value", b"Bearer " + b"A" * 3000, b"\x00Bearer x",
    b"Bearer\ttab-separated-token-value",
])
async def test_malformed_authorization_bytes_are_401_never_a_500(header, log):
    async with _kernel() as (k, _, _):
        host, port = k.http_addr or ("", 0)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"POST /control/reload HTTP/1.1\r\nHost: k\r\nAuthorization: "
                         + header + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            status, _ = await _read_response(reader)
        finally:
            writer.close()
        assert status in (400, 401)  # the HTTP parser may refuse a NUL byte itself
        assert k.config.version == 1
