"""Fault class: requests the endpoints do not take.

Rule: the route decides first: an unknown path is 404; a known method a route does not take
(``CONNECT`` included, whatever its target) is 405 with ``Allow``, with or without a body; only
a matched ``GET`` with a body is 413. A method name the HTTP parser itself does not know
(``FOO``) is refused by the parser with 400 before any route is consulted (documented).
"""

from __future__ import annotations

import asyncio

import pytest

from ron_kernel import Metrics


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 5)
    finally:
        writer.close()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", b"405"),
    (b"CONNECT /readyz HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
    (b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", b"405"),
    (b"PROPFIND /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", b"413"),
    (b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", b"404"),
    (b"FOO /readyz HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
])
async def test_every_odd_request_gets_its_documented_status(request_bytes, status):
    task, (_, port) = await Metrics().serve("127.0.0.1:0")
    try:
        head = await _raw(port, request_bytes)
        assert head.split(b" ", 2)[1] == status, head[:200]
        if status == b"405":
            assert b"Allow: GET" in head
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
