"""The tail client in process, against a real kernel on loopback: events, lag notices, retry."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from pathlib import Path

import pytest

from ron_kernel import Config, KernelEvent
from ron_kernel.cli.tail import tail
from ron_kernel.kernel import Kernel


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _kernel(capacity: int = 64) -> Kernel:
    cfg = Config.from_mapping({"observability": {"expose_http": True, "addr": "127.0.0.1:0"},
                               "bus": {"capacity": capacity}})
    return Kernel(cfg, env={}, watch_config=False, handle_sighup=False)


async def _subscribed(k: Kernel, n: int) -> None:
    for _ in range(600):
        if k.bus.receiver_count >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{n} subscriber(s) expected, have {k.bus.receiver_count}")


async def test_prints_events_and_returns_0_after_shutdown():
    k = _kernel()
    await k.start()
    out, err = io.StringIO(), io.StringIO()
    follower = asyncio.ensure_future(tail(k.urls()["base"], out=out, err=err, retry=False))
    await _subscribed(k, 1)
    k.bus.publish(KernelEvent.Health(service="db", ok=False))
    await k.shutdown()
    assert await asyncio.wait_for(follower, 3) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [{"type": "Health", "service": "db", "ok": False}, {"type": "Shutdown"}]
    assert err.getvalue() == ""


async def test_lag_notices_go_to_err_and_events_to_out():
    k = _kernel(capacity=4)
    await k.start()
    out, err = io.StringIO(), io.StringIO()
    follower = asyncio.ensure_future(tail(k.urls()["base"], out=out, err=err, retry=False))
    await _subscribed(k, 1)
    for i in range(50):  # no await in between: the stream's receiver falls behind
        k.bus.publish(KernelEvent.ConfigUpdated(version=i + 1))
    await k.shutdown()
    assert await asyncio.wait_for(follower, 3) == 0
    notices = [json.loads(line) for line in err.getvalue().splitlines()]
    assert notices and notices[0]["type"] == "Lagged" and notices[0]["missed"] > 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(e["type"] != "Lagged" for e in events)
    assert events[-1] == {"type": "Shutdown"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_no_retry_returns_1_with_the_reason():
    err = io.StringIO()
    code = await tail(f"http://127.0.0.1:{_closed_port()}", retry=False, out=io.StringIO(),
                      err=err)
    assert code == 1
    assert err.getvalue().startswith("tail: ") and "Connect" in err.getvalue()


async def test_retry_gives_up_after_max_attempts():
    err = io.StringIO()
    code = await tail(f"http://127.0.0.1:{_closed_port()}", out=io.StringIO(), err=err,
                      max_backoff=0.05, max_attempts=3)
    assert code == 1
    text = err.getvalue()
    assert text.count("retrying in") == 3
    assert "giving up after 3 attempts" in text


async def test_a_non_200_answer_is_an_error_naming_the_status():
    k = _kernel()
    await k.start()
    base = k.urls()["base"]
    k.bus.close()  # /events answers 503 while the kernel shuts down
    err = io.StringIO()
    code = await tail(base, retry=False, out=io.StringIO(), err=err)
    await k.shutdown()
    assert code == 1
    assert "503" in err.getvalue()
