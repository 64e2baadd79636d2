"""Kernel, in process: composition, readiness, /status, /events, drain bounds, reload.

Every test runs on both loops (conftest), against real loopback HTTP on a port the OS picks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ron_kernel import Config, KernelEvent, _logging
from ron_kernel.errors import Closed, ConfigError, Empty
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ABANDON_GRACE, ChildContext

HTTP = {"observability": {"expose_http": True, "addr": "127.0.0.1:0"}}
HTTP_ARGV = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0"]


def _drain(rx: Any) -> list[KernelEvent]:
    """Every event waiting in ``rx`` now; stops at exactly Empty (open) or Closed (closed)."""
    out = []
    while True:
        try:
            out.append(rx.try_recv())
        except (Empty, Closed):
            return out


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run in an empty directory (no ./Config.toml of the repo) and restore logging after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RON_CONFIG", raising=False)
    saved = {name: getattr(_logging._settings, name) for name in _logging._Settings.__slots__}
    processors = list(_logging._processors)
    yield
    for name, value in saved.items():
        setattr(_logging._settings, name, value)
    _logging._processors[:] = processors


def _config(**sections: Any) -> Config:
    return Config.from_mapping({**HTTP, **sections})


def _kernel(config: Config | None = None, **kwargs: Any) -> Kernel:
    kwargs.setdefault("watch_config", False)
    kwargs.setdefault("handle_sighup", False)
    kwargs.setdefault("env", {})
    return Kernel(config if config is not None else _config(), **kwargs)


async def _ready_child(ctx: ChildContext) -> None:
    ctx.ready()
    await ctx.shutdown.wait()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, orjson.loads(await resp.read())


async def _until(predicate: Any, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# ----------------------------------------------------------------------------- readiness


async def test_ready_only_after_every_child_reports_ready():
    gate = asyncio.Event()

    async def slow_starter(ctx: ChildContext) -> None:
        ctx.ready(False)  # takes part in readiness, not ready yet (warming up)
        await gate.wait()
        ctx.ready()
        await ctx.shutdown.wait()

    async with _kernel() as k, aiohttp.ClientSession() as http:
        # nothing reported yet: not ready (readiness needs at least one service)
        status, body = await _get(http, k.urls()["readyz"])
        assert status == 503 and body["services"] == {}
        k.supervise("fast", _ready_child)
        k.supervise("slow", slow_starter)
        await asyncio.sleep(0.02)
        status, body = await _get(http, k.urls()["readyz"])
        assert status == 503
        assert body["services"] == {"fast": True, "slow": False}
        gate.set()
        await _until(k.health.all_ready)
        status, body = await _get(http, k.urls()["readyz"])
        assert (status, body["ready"]) == (200, True)
        assert k.state == "running"
    assert k.state == "stopped"


async def test_urls_name_every_endpoint_on_the_bound_port():
    k = _kernel()
    assert k.urls() == {}
    async with k:
        assert k.http_addr is not None
        host, port = k.http_addr
        assert host == "127.0.0.1" and port > 0
        base = f"http://127.0.0.1:{port}"
        assert k.urls() == {"base": base, **{n: f"{base}/{n}" for n in
                                             ("metrics", "healthz", "readyz", "status", "events",
                                              "ui")}}


async def test_no_http_server_when_observability_is_off():
    async with _kernel(Config.from_mapping({})) as k:
        k.supervise("svc", _ready_child)
        await _until(k.health.all_ready)
        assert k.http_addr is None and k.urls() == {}


async def test_an_invalid_config_object_is_refused_with_every_problem():
    from ron_kernel.config import BusConfig, SupervisorConfig

    bad = Config(bus=BusConfig(capacity=0), supervisor=SupervisorConfig(restart_cap=0))
    with pytest.raises(ConfigError) as err:
        Kernel(bad, watch_config=False, handle_sighup=False)
    text = str(err.value)
    assert "bus.capacity" in text and "supervisor.restart_cap" in text


async def test_a_taken_port_fails_start_naming_the_address_and_stops_everything():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        k = _kernel(_config(observability={"expose_http": True, "addr": f"127.0.0.1:{port}"}))
        k.supervise("svc", _ready_child)
        with pytest.raises(OSError, match=str(port)):
            await k.start()
    assert k.state == "stopped"
    assert k.supervisor.snapshot()["svc"]["state"] != "running"
    assert k.bus.closed


# ----------------------------------------------------------------------------- /status


async def test_status_reports_config_readiness_children_and_bus():
    async with _kernel() as k, aiohttp.ClientSession() as http:
        k.supervise("svc", _ready_child)
        await _until(k.health.all_ready)
        k.bus.publish(KernelEvent.Health(service="x", ok=True))
        status, body = await _get(http, k.urls()["status"])
    assert status == 200
    assert body["state"] == "running"
    assert body["config_version"] == 1
    assert body["readiness"]["ready"] is True
    assert body["readiness"]["services"] == {"svc": True}
    assert body["readiness"]["missing"] == []
    svc = body["supervisor"]["svc"]
    assert svc["state"] == "running" and svc["restarts"] == 0
    bus = body["bus"]
    assert bus["capacity"] == k.config.bus.capacity
    assert bus["published"] >= 2  # the Health of "svc" and ours
    assert bus["closed"] is False
    assert isinstance(body["uptime_s"], float) and body["uptime_s"] >= 0
    # this run's identity: a client polling the address tells a restarted kernel by it
    assert body["run"]["pid"] == os.getpid()
    assert abs(body["run"]["started_at"] + body["uptime_s"] - time.time()) < 5


# ----------------------------------------------------------------------------- /events


async def _read_stream(session: aiohttp.ClientSession, url: str,
                       lines: list[dict[str, Any]], connected: asyncio.Event) -> None:
    async with session.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        connected.set()
        async for raw in resp.content:
            if raw.strip():
                lines.append(orjson.loads(raw))


async def test_events_stream_to_two_clients_and_both_get_shutdown_before_the_end():
    k = _kernel()
    await k.start()
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        ca, cb = asyncio.Event(), asyncio.Event()
        ta = asyncio.ensure_future(_read_stream(http, k.urls()["events"], a, ca))
        tb = asyncio.ensure_future(_read_stream(http, k.urls()["events"], b, cb))
        await asyncio.wait_for(asyncio.gather(ca.wait(), cb.wait()), 3)
        await _until(lambda: k.bus.receiver_count >= 2)
        k.bus.publish(KernelEvent.ServiceCrashed(service="w", reason="boom"))
        k.bus.publish(KernelEvent.ConfigUpdated(version=7))
        await _until(lambda: len(a) >= 2 and len(b) >= 2)
        await k.shutdown()
        # the streams end (EOF) on their own after Shutdown
        await asyncio.wait_for(asyncio.gather(ta, tb), 3)
    expected = [{"type": "ServiceCrashed", "service": "w", "reason": "boom"},
                {"type": "ConfigUpdated", "version": 7},
                {"type": "Shutdown"}]
    assert a == expected
    assert b == expected


async def test_events_after_shutdown_is_503():
    k = _kernel()
    await k.start()
    url = k.urls()["events"]
    k.bus.close()  # what shutdown does before the server stops
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 503
    await k.shutdown()


async def _slow_client(host: str, port: int) -> tuple[asyncio.StreamReader, Any]:
    """A client that reads nothing: tiny receive buffer, and a stream that stops reading."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def test_a_slow_client_lags_alone_and_never_slows_publishing():
    k = _kernel(_config(bus={"capacity": 128}))
    await k.start()
    assert k.http_addr is not None
    fast: list[dict[str, Any]] = []
    reason = "x" * 1000  # ~1 KiB per line: the slow client's buffers fill quickly
    n = 3000
    async with aiohttp.ClientSession() as http:
        connected = asyncio.Event()
        fast_task = asyncio.ensure_future(_read_stream(http, k.urls()["events"], fast, connected))
        await asyncio.wait_for(connected.wait(), 3)
        reader, writer = await _slow_client(*k.http_addr)
        await _until(lambda: k.bus.receiver_count >= 2)
        worst = 0.0
        for i in range(n):
            t0 = time.perf_counter()
            k.bus.publish(KernelEvent.ServiceCrashed(service=f"s{i}", reason=reason))
            worst = max(worst, time.perf_counter() - t0)
            if i % 16 == 15:
                await asyncio.sleep(0)  # let the fast client's stream keep up
        # the fast client got everything (possibly with lag notices under load)
        await _until(lambda: any(e.get("service") == f"s{n - 1}" for e in fast[-4:]), 10)
        # the kernel answers while the slow client is stuck
        status, body = await _get(http, k.urls()["status"])
        assert status == 200
        assert body["bus"]["published"] >= n
        print(f"\nworst publish with a stuck client: {worst * 1e6:.1f} us")

        slow_bytes = asyncio.ensure_future(reader.read())  # now read until the end
        await k.shutdown()
        raw = await asyncio.wait_for(slow_bytes, 5)
        writer.close()
        await asyncio.wait_for(fast_task, 5)
    assert k.bus.stats().lagged >= 1
    assert b'{"type":"Lagged","missed":' in raw
    missed = int(raw.split(b'{"type":"Lagged","missed":', 1)[1].split(b"}", 1)[0])
    assert missed > 0
    assert raw.endswith(b"\r\n0\r\n\r\n")  # the chunked stream ended cleanly
    assert b'{"type":"Shutdown"}' in raw
    assert fast[-1] == {"type": "Shutdown"}
    received = [e for e in fast if e["type"] == "ServiceCrashed"]
    assert received[-1]["service"] == f"s{n - 1}"


# ----------------------------------------------------------------------------- shutdown


async def test_readiness_is_503_shutting_down_while_draining():
    drained = asyncio.Event()

    async def slow_drain(ctx: ChildContext) -> None:
        ctx.ready()
        await ctx.shutdown.wait()
        await asyncio.sleep(0.3)
        drained.set()

    k = _kernel()
    await k.start()
    k.supervise("slow", slow_drain)
    await _until(k.health.all_ready)
    async with aiohttp.ClientSession() as http:
        stopping = asyncio.ensure_future(k.shutdown())
        await asyncio.sleep(0.05)
        assert not drained.is_set()
        status, body = await _get(http, k.urls()["readyz"])
        assert status == 503
        assert "shutting_down" in body["missing"]
        _, st = await _get(http, k.urls()["status"])
        assert st["state"] == "draining"
        await stopping
    assert drained.is_set()
    assert k.state == "stopped"


async def test_shutdown_is_bounded_with_a_child_ignoring_shutdown_and_one_swallowing_cancel():
    deadline = 0.3

    async def ignores_shutdown(ctx: ChildContext) -> None:
        ctx.ready()
        await asyncio.sleep(3600)

    async def swallows_cancel(ctx: ChildContext) -> None:
        ctx.ready()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    k = _kernel(_config(shutdown={"drain_deadline": f"{int(deadline * 1000)}ms"}))
    await k.start()
    rx = k.bus.subscribe()
    k.supervise("deaf", ignores_shutdown)
    k.supervise("stubborn", swallows_cancel)
    await _until(k.health.all_ready)
    t0 = time.monotonic()
    await asyncio.wait_for(k.shutdown(), deadline + ABANDON_GRACE + 2)
    took = time.monotonic() - t0
    # the deadline, the abandon grace, and scheduling slack on a busy 2-core machine
    assert took < deadline + ABANDON_GRACE + 0.5, took
    assert k.state == "stopped"
    events = _drain(rx)
    assert KernelEvent.Shutdown() in events
    families = k.metrics.render().decode()
    assert 'tasks_aborted_total{amnesia="off",kind="abandoned"} 1.0' in families
    assert 'tasks_aborted_total{amnesia="off",kind="child"} 2.0' in families


async def test_shutdown_is_idempotent_and_concurrent_calls_wait_for_the_same_drain():
    k = _kernel()
    await k.start()
    rx = k.bus.subscribe()
    await asyncio.gather(k.shutdown(), k.shutdown(), k.shutdown())
    await k.shutdown()
    shutdowns = _drain(rx)
    assert shutdowns.count(KernelEvent.Shutdown()) == 1


async def test_run_returns_after_a_real_sigint_and_subscribers_got_shutdown():
    saved = signal.getsignal(signal.SIGINT)
    k = _kernel()
    k.supervise("svc", _ready_child)
    rx = k.bus.subscribe()
    runner = asyncio.ensure_future(k.run())
    await _until(lambda: k.state == "running" and k.health.all_ready())
    # run() installs its Ctrl-C handler after start(): signal only once it is there
    await _until(lambda: signal.getsignal(signal.SIGINT) is not saved)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(runner, 5)
    assert k.state == "stopped"
    seen = _drain(rx)
    assert seen[-1] == KernelEvent.Shutdown()
    assert signal.getsignal(signal.SIGINT) is saved


async def test_run_also_returns_when_shutdown_is_called_elsewhere():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    stopper: list[asyncio.Future[None]] = []

    async def quitter(ctx: ChildContext) -> None:
        ctx.ready()
        await asyncio.sleep(0.05)
        stopper.append(asyncio.ensure_future(k.shutdown()))  # e.g. an embedder's admin call
        await ctx.shutdown.wait()

    k = _kernel()
    k.supervise("quitter", quitter)
    await asyncio.wait_for(k.run(), 5)
    assert k.state == "stopped" and stopper[0].done()
    assert {sig: signal.getsignal(sig) for sig in saved} == saved


async def test_run_off_the_main_thread_waits_for_a_shutdown_request_and_drains():
    # no signal can reach a kernel outside the main thread (issue 11): run() waits for
    # request_shutdown()/shutdown() and drains, instead of failing
    up = threading.Event()
    where: dict[str, Any] = {}

    def in_thread() -> str:
        async def main() -> str:
            k = _kernel(Config.from_mapping({}))
            where.update(kernel=k, loop=asyncio.get_running_loop())
            await k.start()
            up.set()
            await k.run()
            return k.state

        return asyncio.run(main())

    runner = asyncio.ensure_future(asyncio.to_thread(in_thread))
    assert await asyncio.to_thread(up.wait, 10)
    await asyncio.sleep(0.05)
    assert not runner.done() and where["kernel"].state == "running"
    where["loop"].call_soon_threadsafe(where["kernel"].request_shutdown, "test")
    assert await asyncio.wait_for(runner, 10) == "stopped"


# ----------------------------------------------------------------------------- reload


def _write(path: Path, text: str) -> None:
    path.write_text(text)




async def test_reload_applies_log_level_and_supervisor_policy_and_publishes_once(tmp_path):
    cfg = tmp_path / "Config.toml"
    _write(cfg, '[log]\nlevel = "info"\n[supervisor]\nmin_backoff = "100ms"\n')
    k = Kernel(path=cfg, env={}, argv=HTTP_ARGV, watch_config=False, handle_sighup=False)
    async with k:
        k.supervise("svc", _ready_child)
        await _until(k.health.all_ready)
        assert _logging._settings.level == _logging.LEVELS["info"]
        rx = k.bus.subscribe()
        _write(cfg, '[log]\nlevel = "debug"\n[supervisor]\nmin_backoff = "250ms"\n'
                    'max_backoff = "2s"\nrestart_cap = 9\n')
        assert k.config_cell.reload() is True
        assert k.config.version == 2
        assert k.config.log.level == "debug"
        assert _logging._settings.level == _logging.LEVELS["debug"]
        assert k.supervisor._min_backoff == pytest.approx(0.25)
        assert k.supervisor._max_backoff == pytest.approx(2.0)
        assert k.supervisor._restart_cap == 9
        events = _drain(rx)
        assert events == [KernelEvent.ConfigUpdated(version=2)]
        async with aiohttp.ClientSession() as http:
            _, body = await _get(http, k.urls()["status"])
        assert body["config_version"] == 2
        # a reload with nothing changed publishes nothing and keeps the version
        assert k.config_cell.reload() is True
        assert _drain(rx) == [] and k.config.version == 2


async def test_reload_applies_log_format_at_once(tmp_path):
    cfg = tmp_path / "Config.toml"
    _write(cfg, '[log]\nformat = "json"\n')
    async with Kernel(path=cfg, env={}, argv=HTTP_ARGV, watch_config=False,
                      handle_sighup=False) as k:
        assert _logging._settings.format == "json"
        _write(cfg, '[log]\nformat = "text"\n')
        assert k.config_cell.reload() is True
        assert _logging._settings.format == "text"


async def test_reload_applies_drain_deadline(tmp_path):
    cfg = tmp_path / "Config.toml"
    _write(cfg, '[shutdown]\ndrain_deadline = "5s"\n')
    async with Kernel(path=cfg, env={}, argv=HTTP_ARGV, watch_config=False,
                      handle_sighup=False) as k:
        _write(cfg, '[shutdown]\ndrain_deadline = "200ms"\n')
        assert k.config_cell.reload() is True
        assert k.supervisor._drain_deadline == pytest.approx(0.2)


async def test_an_invalid_reload_keeps_the_old_config_and_the_kernel_ready(tmp_path):
    cfg = tmp_path / "Config.toml"
    _write(cfg, '[log]\nlevel = "info"\n')
    async with Kernel(path=cfg, env={}, argv=HTTP_ARGV, watch_config=False,
                      handle_sighup=False) as k, aiohttp.ClientSession() as http:
        k.supervise("svc", _ready_child)
        await _until(k.health.all_ready)
        rx = k.bus.subscribe()
        _write(cfg, '[log]\nlevel = "loud"\n[bus]\ncapacity = 0\n')
        assert k.config_cell.reload() is False
        problems = str(k.config_cell.last_error)
        assert "log.level" in problems and "bus.capacity" in problems
        assert k.config.version == 1 and k.config.log.level == "info"
        assert _drain(rx) == []
        status, _ = await _get(http, k.urls()["readyz"])
        assert status == 200
        _, body = await _get(http, k.urls()["status"])
        assert body["config_version"] == 1 and body["state"] == "running"


async def test_sighup_reloads_when_enabled(tmp_path):
    cfg = tmp_path / "Config.toml"
    _write(cfg, '[log]\nlevel = "info"\n')
    async with Kernel(path=cfg, env={}, argv=HTTP_ARGV, watch_config=False,
                      handle_sighup=True) as k:
        rx = k.bus.subscribe()
        _write(cfg, '[log]\nlevel = "warn"\n')
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: k.config.version == 2)
        assert _drain(rx) == [KernelEvent.ConfigUpdated(version=2)]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


async def test_children_see_the_reloaded_config(tmp_path):
    cfg = tmp_path / "Config.toml"
    _write(cfg, '[bus]\ncapacity = 64\n[log]\nlevel = "info"\n')
    seen: list[str] = []

    async def reader(ctx: ChildContext) -> None:
        ctx.ready()
        await ctx.shutdown.wait()
        seen.append(ctx.config.log.level)

    async with Kernel(path=cfg, env={}, argv=HTTP_ARGV, watch_config=False,
                      handle_sighup=False) as k:
        k.supervise("reader", reader)
        await _until(k.health.all_ready)
        _write(cfg, '[bus]\ncapacity = 64\n[log]\nlevel = "error"\n')
        assert k.config_cell.reload()
    assert seen == ["error"]
