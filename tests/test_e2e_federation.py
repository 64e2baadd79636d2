"""End to end: a fleet of three ``ron-kernel run`` processes and a ``tail --nats`` over a real
nats-server, through a crash and a 5 s NATS outage.

Each kernel runs the app below (``--app fedapp:factory``) as ``web-1``, ``web-2``, ``web-3``:
a child that crashes when ``crash-<node>`` appears in the working directory, a heartbeat that
publishes a Health event every 50 ms (so the outage has something to drop), and a child that
logs every remote event it receives on ``kernel.fleet`` to ``seen-<node>.jsonl`` with its
arrival time. Every process is started and stopped by the test; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks._natsserver import NatsServer

PY = sys.executable
URL_LINE = re.compile(r"ron-kernel: observability on (http://127\.0\.0\.1:\d+) ")
NODES = ("web-1", "web-2", "web-3")

APP = textwrap.dedent('''
    import json
    import time
    from pathlib import Path

    from ron_kernel import KernelEvent
    from ron_kernel.errors import Canceled, Closed
    from ron_kernel.kernel import FleetLagged


    def factory(kernel):
        node = kernel.config.federation.node

        async def crasher(ctx):
            ctx.ready()
            trigger = Path(f"crash-{node}")
            while await ctx.sleep(0.02):
                if trigger.exists():
                    trigger.unlink()
                    raise RuntimeError(f"induced crash on {node}")

        async def heartbeat(ctx):
            ctx.ready()
            while await ctx.sleep(0.05):
                ctx.bus.publish(KernelEvent.Health(service="heartbeat", ok=True))

        async def fleet_log(ctx):
            ctx.ready()
            with kernel.fleet.subscribe() as rx, open(f"seen-{node}.jsonl", "a") as log:
                while True:
                    try:
                        remote = await ctx.wait(rx.recv_remote())
                    except FleetLagged as lag:
                        row = {"lagged": lag.missed, "node": lag.node, "at": time.time()}
                    except (Canceled, Closed):
                        return
                    else:
                        if remote.event == KernelEvent.Health(service="heartbeat", ok=True):
                            continue
                        row = {"node": remote.node, "seq": remote.seq, "ts": remote.ts,
                               "at": time.time(), **json.loads(remote.event.to_json())}
                    log.write(json.dumps(row) + "\\n")
                    log.flush()

        kernel.supervise("crasher", crasher)
        kernel.supervise("heartbeat", heartbeat)
        kernel.supervise("fleet-log", fleet_log)
''')


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RONK_", "RON_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    def __init__(self, cwd: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.out_path, self.err_path = cwd / f"{name}.out", cwd / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen([PY, "-m", "ron_kernel", *args], cwd=cwd, env=_env(),
                                      stdout=out, stderr=err)

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)


def _wait(what: str, cond: Callable[[], Any], timeout: float, procs: list[Proc]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        for proc in procs:
            assert proc.alive(), f"{proc.name} exited ({proc.p.returncode}) before {what}:\n" \
                                 f"{proc.err[-3000:]}"
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.err[-1500:]}" for p in procs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.01)


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _status(base: str) -> dict[str, Any]:
    code, body = _get(base + "/status")
    assert code == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def _seen(cwd: Path, node: str) -> list[dict[str, Any]]:
    path = cwd / f"seen-{node}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _crash_from(rows: list[dict[str, Any]], node: str) -> dict[str, Any] | None:
    for row in rows:
        if row.get("type") == "ServiceCrashed" and row.get("node") == node:
            return row
    return None


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    (tmp_path / "fedapp.py").write_text(APP)
    return tmp_path


@pytest.fixture
def started() -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for proc in procs:  # the processes this test started, by their handles
        proc.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_fleet_of_three_sees_a_crash_and_survives_a_nats_outage(fleet_dir: Path,
                                                                   started: list[Proc]):
    cwd = fleet_dir
    server = NatsServer(cwd / "nats")
    server.start()
    try:
        # credentials in the URL (the server has no auth and accepts them): they must never show
        url = server.url.replace("nats://", "nats://fleet:hunter2@")
        kernels = {}
        for node in NODES:
            proc = Proc(cwd, node, [
                "run", "--app", "fedapp:factory", "--obs-http", "true",
                "--obs-addr", "127.0.0.1:0", "--fed-nats-url", url,
                "--fed-node", node, "--fed-buffer", "16", "--drain-deadline", "2s"])
            started.append(proc)
            kernels[node] = proc
        tail = Proc(cwd, "tail", ["tail", "--nats", url, "--node", "web-*"])
        started.append(tail)
        bases = {}
        for node, proc in kernels.items():
            match = _wait(f"{node}'s URL line", lambda p=proc: URL_LINE.search(p.out), 60,
                          started)
            bases[node] = match.group(1)
        _wait("the tail to subscribe", lambda: "following" in tail.err, 30, started)
        # everyone connected and hearing the other two (heartbeats)
        _wait("a connected fleet", lambda: all(
            _status(b)["federation"]["connected"]
            and set(_status(b)["fleet"]["nodes"]) == set(NODES) - {n}
            for n, b in bases.items()), 30, started)

        # --- a child crashes in web-1: the two others and the tail see it, with the node
        (cwd / "crash-web-1").touch()
        # one loop watches all three observers, so each gets its own first-seen time
        first: dict[str, tuple[float, dict[str, Any]]] = {}

        def tail_crash() -> dict[str, Any] | None:
            rows = [json.loads(x) for x in tail.out.splitlines() if x.endswith("}")]
            return _crash_from(rows, "web-1")

        def all_seen() -> bool:
            for name, probe in (("web-2", lambda: _crash_from(_seen(cwd, "web-2"), "web-1")),
                                ("web-3", lambda: _crash_from(_seen(cwd, "web-3"), "web-1")),
                                ("tail", tail_crash)):
                if name not in first:
                    row = probe()
                    if row is not None:
                        first[name] = (time.time(), row)
            return len(first) == 3

        _wait("web-2, web-3 and the tail to see web-1's crash", all_seen, 10, started)
        for name, (noticed, row) in first.items():
            assert row["node"] == "web-1" and row["service"] == "crasher"
            assert "induced crash on web-1" in row["reason"]
            # receivers stamp their arrival; for the tail, the test's own polling is the bound
            arrived = row.get("at", noticed)
            print(f"crash on web-1 -> {name}: {(arrived - row['ts']) * 1000:.1f} ms")
            assert arrived - row["ts"] < 1.0, name
        assert _crash_from(_seen(cwd, "web-1"), "web-1") is None  # own events not echoed
        _wait("web-1's crasher to be back (ready)", lambda: all(
            _get(b + "/readyz")[0] == 200 for b in bases.values()), 15, started)
        before = {n: _status(b)["federation"] for n, b in bases.items()}
        assert all(f["url"] == server.url.replace("nats://", "nats://***@")
                   for f in before.values())

        # --- NATS goes away for 5 s: nobody blocks, nobody crashes, drops are counted
        server.stop()
        outage_end = time.monotonic() + 5.0
        timings: dict[str, list[float]] = {n: [] for n in NODES}
        while time.monotonic() < outage_end:
            for node, base in bases.items():
                t0 = time.perf_counter()
                code, _ = _get(base + "/readyz", timeout=5.0)
                timings[node].append(time.perf_counter() - t0)
                assert code == 200, node
            time.sleep(0.02)
        for node, samples in timings.items():
            samples.sort()
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            print(f"{node} /readyz during the outage: {len(samples)} requests, "
                  f"p50 {samples[len(samples) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
            assert p99 < 0.5, f"{node}'s /readyz slowed down during the outage: p99 {p99:.3f}s"
        during = {n: _status(b)["federation"] for n, b in bases.items()}
        for node in NODES:
            assert kernels[node].alive()
            assert during[node]["connected"] is False
            assert during[node]["dropped"] > before[node]["dropped"], during[node]
        assert tail.alive()

        # --- NATS is back on the same port: federation reconnects and events flow again
        server.start()
        _wait("every kernel to reconnect", lambda: all(
            _status(b)["federation"]["connected"] and _status(b)["federation"]["connects"] >= 2
            for b in bases.values()), 30, started)
        (cwd / "crash-web-2").touch()
        for node in ("web-1", "web-3"):
            _wait(f"{node} to see web-2's crash after the outage",
                  lambda n=node: _crash_from(_seen(cwd, n), "web-2"), 15, started)
        _wait("the tail to print web-2's crash", lambda: any(
            '"ServiceCrashed"' in x and '"web-2"' in x for x in tail.out.splitlines()),
              15, started)
        # what web-2 dropped during the outage shows as a gap (Lagged) on the others
        gaps = _status(bases["web-1"])["fleet"]["nodes"]["web-2"]
        assert gaps["gaps"] >= 1 and gaps["missed"] >= 1, gaps
        assert any(r.get("lagged") and r["node"] == "web-2" for r in _seen(cwd, "web-1"))
        code, metrics = _get(bases["web-2"] + "/metrics")
        assert b'federation_connected{amnesia="off"} 1.0' in metrics
        assert b"federation_dropped_total" in metrics

        # --- web-1 stops: the others see its Shutdown and keep running
        kernels["web-1"].p.send_signal(signal.SIGINT)
        assert kernels["web-1"].p.wait(timeout=30) == 0
        for node in ("web-2", "web-3"):
            _wait(f"{node} to see web-1's Shutdown", lambda n=node: any(
                r.get("type") == "Shutdown" and r["node"] == "web-1" for r in _seen(cwd, n)),
                  10, started[1:])
            assert kernels[node].alive()
            assert _status(bases[node])["state"] == "running"
        for node in ("web-2", "web-3"):
            kernels[node].p.send_signal(signal.SIGINT)
            assert kernels[node].p.wait(timeout=30) == 0
        tail.p.send_signal(signal.SIGINT)
        assert tail.p.wait(timeout=15) == 0
        for proc in started:
            assert "hunter2" not in proc.err + proc.out
    finally:
        server.stop()
