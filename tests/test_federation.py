"""Federation in process: config, the wire format, two kernels over a real nats-server.

The server is the Debian ``nats-server`` on a free 127.0.0.1 port, started once for the module
and stopped at its end; each test uses its own subject prefix so tests never see each other.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from nats.aio.client import Client

from benchmarks._natsserver import NatsServer, free_port
from ron_kernel import Config, KernelEvent
from ron_kernel._federation import MAX_BACKOFF, MIN_BACKOFF, backoff_delay
from ron_kernel._fleet import Fleet, decode, encode, subject_for
from ron_kernel.cli import main
from ron_kernel.cli.tail import literal_node, tail_nats
from ron_kernel.config import explain
from ron_kernel.errors import ConfigError, Empty
from ron_kernel.kernel import FleetLagged, Kernel
from ron_kernel.logging import configure_logging


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def _kernel(url: str, node: str, prefix: str, **extra: str) -> Kernel:
    argv = ["--fed-nats-url", url, "--fed-node", node, "--fed-prefix", prefix]
    for key, value in extra.items():
        argv += [f"--fed-{key}", value]
    return Kernel(Config.load(argv=argv, env={}), env={}, watch_config=False,
                  handle_sighup=False)


async def _until(check: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = Client()
    await nc.connect(nats_server.url, allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


# ----------------------------------------------------------------------------- config


def test_federation_keys_defaults_env_and_flags():
    cfg = Config.load(env={}, argv=[])
    assert cfg.federation.nats_url == ""
    assert cfg.federation.prefix == "ron" and cfg.federation.required is False
    assert cfg.federation.node and "." not in cfg.federation.node
    cfg = Config.load(env={"RONK_FED_NATS_URL": "nats://127.0.0.1:4222", "RONK_FED_NODE": "web-1",
                           "RONK_FED_REQUIRED": "yes", "RONK_FED_BUFFER": "8"},
                      argv=["--fed-prefix", "acme"])
    assert (cfg.federation.nats_url, cfg.federation.node, cfg.federation.prefix,
            cfg.federation.required, cfg.federation.buffer) == (
        "nats://127.0.0.1:4222", "web-1", "acme", True, 8)
    cfg = Config.from_mapping({"federation": {"node": "db-2", "nats_url": "tls://h"}})
    assert cfg.federation.node == "db-2"


@pytest.mark.parametrize("node", ["a.b", "web-*", "x>", "has space", "", "tab\there", "é" * 65])
def test_a_bad_node_name_is_a_config_error_naming_key_and_source(node: str):
    with pytest.raises(ConfigError) as err:
        Config.load(env={"RONK_FED_NODE": node}, argv=[])
    assert "federation.node" in str(err.value) and "env:RONK_FED_NODE" in str(err.value)


def test_a_bad_prefix_is_a_config_error(tmp_path: Path):
    path = tmp_path / "Config.toml"
    path.write_text('[federation]\nprefix = "ron.prod"\n')
    with pytest.raises(ConfigError) as err:
        Config.load(path, env={})
    assert "federation.prefix" in str(err.value) and f"file:{path}:2" in str(err.value)


@pytest.mark.parametrize("url", ["http://u:hunter2@h:4222", "nats://u:hunter2@h:99999",
                                 "nats://u:hunter2@:4222", "nats://u:hunter2@h/path",
                                 "nats://u:hunter2@h,,nats://x"])
def test_a_bad_url_is_a_config_error_without_its_credentials(url: str):
    with pytest.raises(ConfigError) as err:
        Config.load(env={}, argv=["--fed-nats-url", url])
    assert "federation.nats_url" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_credentials_in_the_url_never_show_in_config_check(capsys: pytest.CaptureFixture[str]):
    url = "nats://alice:hunter2@127.0.0.1:4222"
    rows = {row.key: row for row in explain(env={"RONK_FED_NATS_URL": url}, argv=[])}
    assert rows["federation.nats_url"].value == "'nats://***@127.0.0.1:4222'"
    assert main(["config", "check", "--fed-nats-url", url]) == 0
    out = capsys.readouterr()
    assert "hunter2" not in out.out + out.err and "nats://***@127.0.0.1:4222" in out.out


def test_credentials_in_the_url_never_show_in_a_reload_diff():
    from ron_kernel._config import diff

    old = Config.load(env={}, argv=["--fed-nats-url", "nats://a:hunter2@h1:4222"]).flat()
    new = Config.load(env={}, argv=["--fed-nats-url", "nats://a:swordfish@h2:4222"]).flat()
    rows = diff(old, new)
    assert [r["key"] for r in rows] == ["federation.nats_url"]
    assert rows[0]["applies"] == "next-start"
    assert "hunter2" not in str(rows) and "swordfish" not in str(rows)
    assert "nats://***@h2:4222" in rows[0]["new"]


def test_without_the_extra_a_nats_url_is_a_config_error_saying_which_extra():
    code = ("import sys; sys.modules['nats'] = None\n"
            "from ron_kernel import Config\n"
            "from ron_kernel.errors import ConfigError\n"
            "print(Config.load(env={}, argv=[]).federation.nats_url == '')\n"
            "try:\n"
            "    Config.load(env={}, argv=['--fed-nats-url', 'nats://u:hunter2@127.0.0.1:4222'])\n"
            "except ConfigError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True\n")
    assert "federation.nats_url" in done.stdout
    assert "pip install 'ron-kernel[nats]'" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr


# ----------------------------------------------------------------------------- wire format


def test_encode_is_the_interop_json_plus_node_seq_ts_and_decodes_back():
    for event in (KernelEvent.Health(service="svc", ok=True), KernelEvent.ConfigUpdated(version=3),
                  KernelEvent.ServiceCrashed(service="svc", reason='panic: "x"\n'),
                  KernelEvent.Shutdown()):
        data = encode(event, "web-1", 7, 1700000000.25)
        payload = orjson.loads(data)
        assert payload["node"] == "web-1" and payload["seq"] == 7
        assert payload["ts"] == 1700000000.25
        assert KernelEvent.from_json(data) == event
        flat = orjson.loads(event.to_json())
        assert {k: v for k, v in payload.items() if k not in ("node", "seq", "ts")} == flat
        subject = subject_for("ron", "web-1", type(event).__name__)
        remote = decode(subject, data, "ron")
        assert (remote.node, remote.seq, remote.event) == ("web-1", 7, event)
        assert orjson.loads(remote.to_json()) == payload
    assert subject_for("ron", "web-1", "ServiceCrashed") == "ron.web-1.kernel.service.crashed"
    assert subject_for("ron", "web-1", "ConfigUpdated") == "ron.web-1.kernel.config.updated"


def test_backoff_is_jittered_exponential_and_capped():
    import random

    rng = random.Random(7)
    delays = [backoff_delay(n, rng) for n in range(1, 12)]
    assert all(MIN_BACKOFF / 2 <= d <= MAX_BACKOFF for d in delays)
    assert delays[0] <= 0.2 and delays[-1] >= MAX_BACKOFF / 2
    assert len({round(backoff_delay(9, rng), 6) for _ in range(20)}) > 1  # jitter


def test_literal_node_globs():
    assert literal_node("web-1") == "web-1"
    assert literal_node("web-*") is None and literal_node("db-?") is None


def test_fleet_gap_restart_and_eviction_bookkeeping():
    fleet = Fleet(own_node="me", prefix="ron")
    rx = fleet.subscribe()
    nodes = fleet.status()["nodes"]
    assert nodes == {}

    def send(node: str, seq: int) -> None:
        data = encode(KernelEvent.Health(service="s", ok=True), node,
                      seq, time.time())
        fleet.receive(f"ron.{node}.kernel.health", data)

    send("a", 5)   # joining late: the first event sets the baseline, no gap
    send("a", 6)
    send("a", 9)   # 7 and 8 missed
    send("a", 1)   # the node started again
    send("me", 1)  # our own echo: ignored
    assert rx.try_recv()[0] == "a"
    assert rx.try_recv()[0] == "a"
    with pytest.raises(FleetLagged) as lag:
        rx.try_recv()
    assert (lag.value.node, lag.value.missed) == ("a", 2)
    assert "node 'a' skipped 2" in str(lag.value)
    assert rx.try_recv()[0] == "a"
    assert rx.try_recv()[0] == "a"
    with pytest.raises(Empty):
        rx.try_recv()
    view = fleet.status()["nodes"]["a"]
    assert (view["events"], view["gaps"], view["missed"], view["restarts"], view["last_seq"]) \
        == (4, 1, 2, 1, 1)
    assert "me" not in fleet.status()["nodes"]


# ----------------------------------------------------------------------------- two kernels


async def test_events_reach_the_other_kernel_with_node_and_are_not_echoed(nats_server):
    prefix = _prefix()
    a = _kernel(nats_server.url, "a", prefix)
    b = _kernel(nats_server.url, "b", prefix)
    async with a, b:
        rx_a, rx_b = a.fleet.subscribe(), b.fleet.subscribe()
        await _until(lambda: a.status()["federation"]["connected"]
                     and b.status()["federation"]["connected"])
        a.bus.publish(KernelEvent.ServiceCrashed(service="svc", reason="boom"))
        node, event = await asyncio.wait_for(rx_b.recv(), 5)
        assert (node, event) == ("a", KernelEvent.ServiceCrashed(service="svc", reason="boom"))
        b.bus.publish(KernelEvent.ConfigUpdated(version=9))
        assert await asyncio.wait_for(rx_a.recv(), 5) == ("b", KernelEvent.ConfigUpdated(9))
        await asyncio.sleep(0.2)
        assert len(rx_a) == 0 and len(rx_b) == 0  # nothing of their own came back
        status = b.status()
        assert status["fleet"]["nodes"]["a"]["events"] == 1
        assert status["fleet"]["nodes"]["a"]["last_type"] == "ServiceCrashed"
        fed = a.status()["federation"]
        assert fed["published"] == 1 and fed["seq"] == 1 and fed["node"] == "a"
        assert a.metrics.counters.federation_connected.get() == 1
        text = a.metrics.render().decode()
        assert 'federation_published_total{amnesia="off"} 1.0' in text
        assert 'federation_connected{amnesia="off"} 1.0' in text
        # a stops first: its Shutdown is published before its connection closes, and b,
        # which sees it, keeps running (a remote Shutdown never stops this kernel)
        await a.shutdown()
        assert await asyncio.wait_for(rx_b.recv(), 5) == ("a", KernelEvent.Shutdown())
        assert b.state == "running" and not b.bus.closed


async def test_a_kernel_without_federation_has_an_empty_fleet_and_no_connected_series():
    k = Kernel(Config.load(env={}, argv=[]), env={}, watch_config=False, handle_sighup=False)
    async with k:
        assert k.status()["federation"] == {"enabled": False}
        assert k.status()["fleet"]["nodes"] == {}
        assert "\nfederation_connected{" not in k.metrics.render().decode()


async def test_seq_gaps_become_lagged_for_that_node_and_are_counted(nats_server, client):
    prefix = _prefix()
    k = _kernel(nats_server.url, "watcher", prefix)
    async with k:
        rx = k.fleet.subscribe()
        await _until(lambda: k.status()["federation"]["connected"])
        node = "web-9"
        for seq in (1, 2, 6):
            await client.publish(f"{prefix}.web-9.kernel.health",
                                 encode(KernelEvent.Health(service="s", ok=True), node, seq, 1.0))
        await client.flush()
        assert (await asyncio.wait_for(rx.recv(), 5))[0] == "web-9"
        assert (await asyncio.wait_for(rx.recv(), 5))[0] == "web-9"
        with pytest.raises(FleetLagged) as lag:
            await asyncio.wait_for(rx.recv(), 5)
        assert lag.value.node == "web-9" and lag.value.missed == 3
        assert await asyncio.wait_for(rx.recv(), 5) == ("web-9",
                                                        KernelEvent.Health(service="s", ok=True))
        assert k.metrics.counters.federation_gaps_total.get("web-9") == 3
        assert k.status()["fleet"]["nodes"]["web-9"]["gaps"] == 1


async def test_unreachable_nats_at_start_is_not_fatal_and_it_connects_later(tmp_path):
    server = NatsServer(tmp_path / "late", port=free_port())
    k = _kernel(server.url.replace("nats://", "nats://bob:hunter2@"), "late", _prefix())
    logs = io.StringIO()
    configure_logging(format="json", level="debug", stream=logs)
    try:
        async with k:
            rx = k.bus.subscribe()
            await _until(lambda: k.status()["federation"]["last_error"] is not None)
            status = k.status()["federation"]
            assert status["connected"] is False
            assert "hunter2" not in json.dumps(k.status())
            assert status["url"].startswith("nats://***@127.0.0.1:")
            k.bus.publish(KernelEvent.ConfigUpdated(version=5))  # buffered meanwhile
            await asyncio.to_thread(server.start)
            await _until(lambda: k.status()["federation"]["connected"], within=20)
            await _until(lambda: k.status()["federation"]["published"] == 1)
            assert k.metrics.counters.backoff_retries_total.get("federation_connect") >= 1
            rx.close()
    finally:
        server.stop()
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    events = {line["event"] for line in lines}
    assert {"federation_unreachable", "federation_connected", "federation_stopped"} <= events
    assert "hunter2" not in logs.getvalue() and "nats://***@127.0.0.1:" in logs.getvalue()


async def test_required_federation_fails_the_start_with_a_clear_redacted_error():
    url = f"nats://carol:hunter2@127.0.0.1:{free_port()}"
    k = _kernel(url, "strict", _prefix(), required="true")
    with pytest.raises(ConnectionError) as err:
        await k.start()
    text = str(err.value)
    assert "federation.required" in text and "nats://***@127.0.0.1:" in text
    assert "hunter2" not in text
    assert k.state == "stopped"


async def test_a_full_outbound_buffer_drops_the_oldest_and_counts(tmp_path):
    k = _kernel(f"nats://127.0.0.1:{free_port()}", "busy", _prefix(), buffer="4")
    async with k:
        for version in range(1, 11):
            k.bus.publish(KernelEvent.ConfigUpdated(version=version))
        await _until(lambda: k.status()["federation"]["seq"] == 10)
        status = k.status()["federation"]
        assert status["buffered"] == 4 and status["dropped"] == 6
        assert k.metrics.counters.federation_dropped_total.get() == 6
        started = time.monotonic()
    # at shutdown with NATS away, Shutdown pushes out one more and the 4 left are dropped too,
    # without waiting for a connection that is not there
    assert k.metrics.counters.federation_dropped_total.get() == 11
    assert k.status()["federation"]["seq"] == 11
    assert time.monotonic() - started < 1.5


async def test_tail_nats_prints_matching_nodes_and_gaps(nats_server, client):
    prefix = _prefix()
    out, err = io.StringIO(), io.StringIO()
    stop = asyncio.Event()
    task = asyncio.ensure_future(tail_nats(nats_server.url, node="web-*", prefix=prefix,
                                           out=out, err=err, stop=stop))
    await _until(lambda: "following" in err.getvalue())
    for node, seq in (("web-1", 1), ("db-1", 1), ("web-1", 3)):
        await client.publish(subject_for(prefix, node, "Shutdown"),
                             encode(KernelEvent.Shutdown(), node, seq, 2.0))
    await client.publish(f"{prefix}.web-1.kernel.shutdown", b"not json")
    await client.flush()
    await _until(lambda: out.getvalue().count("\n") == 2)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["node"], x["seq"], x["type"]) for x in lines] == [("web-1", 1, "Shutdown"),
                                                                ("web-1", 3, "Shutdown")]
    assert '{"type":"Lagged","node":"web-1","missed":1}' in err.getvalue()


def test_tail_nats_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]):
    assert main(["tail", "--nats", "http://a:hunter2@x"]) == 2
    assert main(["tail", "--nats", "nats://x", "--prefix", "a.b"]) == 2
    assert main(["tail", "--node", "web-*"]) == 2
    err = capsys.readouterr().err
    assert "not a NATS URL" in err and "hunter2" not in err and "--node needs --nats" in err
