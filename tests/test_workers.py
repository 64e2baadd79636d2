"""Worker processes are children: crash reasons, one config, one bus, one /metrics, drain.

Every test starts real worker processes (``python -m ron_kernel._worker_main``) running the
apps of ``tests/workers_apps.py``, on both loops (conftest), and stops them: a kernel's
shutdown reaps its workers, and each test checks or waits for that. Bounds are generous (the
machine is shared); the latencies themselves are measured by ``benchmarks/workers.py``.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from _procs import alive
from ron_kernel import Config, KernelEvent, _logging, _workers
from ron_kernel.bus import Receiver
from ron_kernel.kernel import Kernel
from workers_apps import Knobs

START = 30.0  # seconds a worker may take to come up on a loaded machine


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RON_CONFIG", raising=False)
    yield


def _kernel(*argv: str, app: type[Any] | None = Knobs, **knobs: Any) -> Kernel[Any]:
    base = ["--sup-min-backoff", "20ms", "--sup-max-backoff", "100ms", *argv]
    config = Config.load(argv=base, env={}, app=app)
    if knobs:
        config = Config.from_mapping({"app": knobs}, base=config)
    return Kernel(config, app_config=app, env={}, argv=base, watch_config=False,
                  handle_sighup=False)


async def until(check: Callable[[], bool], within: float = START) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def event(rx: Receiver[KernelEvent], match: Callable[[KernelEvent], bool],
                within: float = START) -> KernelEvent:
    """The first event on ``rx`` that ``match`` accepts (bounded)."""
    async with asyncio.timeout(within):
        while True:
            found = await rx.recv()
            if match(found):
                return found


def workers(kernel: Kernel[Any], pool: str = "w") -> dict[str, Any]:
    found: dict[str, Any] = kernel.status()["workers"][pool]["workers"]
    return found


def pids(kernel: Kernel[Any], pool: str = "w") -> list[int]:
    return [w["pid"] for w in workers(kernel, pool).values() if w["pid"] is not None]


def up(kernel: Kernel[Any], pool: str = "w") -> bool:
    return all(w["state"] == "up" for w in workers(kernel, pool).values())


@pytest.fixture
async def started() -> AsyncIterator[list[Kernel[Any]]]:
    """Kernels a test starts; each is shut down (and its workers reaped) at the end."""
    kernels: list[Kernel[Any]] = []
    yield kernels
    for kernel in kernels:
        await kernel.shutdown(2.0)


async def _start(started: list[Kernel[Any]], kernel: Kernel[Any], app: str, count: int = 2,
                 **options: Any) -> Kernel[Any]:
    kernel.supervise_workers("w", app=app, count=count, **options)
    started.append(kernel)
    await kernel.start()
    return kernel


# ----------------------------------------------------------------------------- children


async def test_workers_are_children_named_pool_slash_index_and_make_the_kernel_ready(started):
    kernel = await _start(started, _kernel(), "workers_apps:ok")
    await until(kernel.health.all_ready)
    snapshot = kernel.supervisor.snapshot()
    assert snapshot["w/0"]["state"] == snapshot["w/1"]["state"] == "running"
    found = workers(kernel)
    assert {w["state"] for w in found.values()} == {"up"}
    assert len(set(pids(kernel))) == 2 and os.getpid() not in pids(kernel)
    assert kernel.status()["workers"]["w"]["ready"] == 2
    # each worker runs the app under its own kernel: its children come back in the pongs,
    # and /status shows them in the tree, under the worker child (as a nested supervisor's)
    await until(lambda: all(w["children"].get("svc", {}).get("state") == "running"
                            for w in workers(kernel).values()))
    tree = kernel.status()["supervisor"]
    assert tree["w/1"]["children"]["svc"]["state"] == "running"
    assert tree["w/1"]["children"]["svc"]["restart"] == "permanent"  # a whole ChildInfo


async def test_a_sigkilled_worker_is_a_crash_with_its_signal_and_is_restarted(started):
    kernel = _kernel()
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:ok")
    await until(kernel.health.all_ready)
    victim = workers(kernel)["0"]["pid"]
    os.kill(victim, signal.SIGKILL)
    crash = await event(rx, lambda e: isinstance(e, KernelEvent.ServiceCrashed))
    assert crash == KernelEvent.ServiceCrashed(service="w/0",
                                               reason="exit: signal 9 (SIGKILL)")
    await until(lambda: workers(kernel)["0"]["state"] == "up"
                and workers(kernel)["0"]["pid"] != victim)
    assert kernel.supervisor.snapshot()["w/0"]["restarts"] == 1
    assert kernel.metrics.counters.service_restarts_total.get("w/0") == 1
    await until(kernel.health.all_ready)


async def test_an_operator_restart_drains_one_worker_and_starts_a_new_process(started):
    kernel = _kernel()
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:ok")
    await until(lambda: kernel.status()["workers"]["w"]["ready"] == 2)
    before = workers(kernel)
    await kernel.supervisor.restart("w/0")  # what POST /control/restart/w/0 does
    await until(lambda: workers(kernel)["0"]["state"] == "up"
                and workers(kernel)["0"]["pid"] != before["0"]["pid"])
    assert workers(kernel)["1"]["pid"] == before["1"]["pid"]  # the other one kept serving
    assert not alive(before["0"]["pid"])
    assert not [e for e in rx.try_recv_many() if isinstance(e, KernelEvent.ServiceCrashed)]
    assert kernel.metrics.counters.worker_kills_total.total() == 0  # it drained in time


async def test_an_exit_status_is_the_reason_and_the_cap_quarantines_the_worker(started):
    kernel = _kernel("--sup-restart-cap", "1")
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:exits_before_ready", count=1)
    crash = await event(rx, lambda e: isinstance(e, KernelEvent.ServiceCrashed))
    assert crash == KernelEvent.ServiceCrashed(service="w/0", reason="exit: status 7")
    await until(lambda: kernel.supervisor.snapshot()["w/0"]["state"] == "quarantined")
    assert "quarantined:w/0" in kernel.health.missing()
    assert kernel.metrics.counters.supervisor_quarantined.get("w/0") == 1


async def test_a_worker_that_cannot_import_the_app_says_why_and_is_quarantined(started):
    kernel = _kernel("--sup-restart-cap", "1")
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "no_such_module_for_workers:build", count=1)
    crash = await event(rx, lambda e: isinstance(e, KernelEvent.ServiceCrashed))
    assert isinstance(crash, KernelEvent.ServiceCrashed)
    assert crash.reason.startswith("exit: status 3: cannot load the app: ")
    assert "No module named 'no_such_module_for_workers'" in crash.reason
    await until(lambda: kernel.supervisor.snapshot()["w/0"]["state"] == "quarantined")
    info = kernel.supervisor.snapshot()["w/0"]
    assert info["last_reason"] == crash.reason
    # the traceback shown is the worker's own, not the parent's relay
    assert "ModuleNotFoundError" in (info["last_traceback"] or "")


async def test_a_failing_factory_is_reported_with_its_error(started):
    kernel = _kernel()
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:factory_fails", count=1)
    crash = await event(rx, lambda e: isinstance(e, KernelEvent.ServiceCrashed))
    assert crash == KernelEvent.ServiceCrashed(
        service="w/0", reason="exit: status 3: the app factory failed: "
                              "RuntimeError: no database at db.invalid")


# ----------------------------------------------------------------------------- one bus


async def test_worker_events_reach_the_parent_bus_named_worker_slash_child(started):
    kernel = _kernel()
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:child_crashes")
    crashes: set[KernelEvent] = set()
    ready: set[KernelEvent] = set()
    async with asyncio.timeout(START):
        while len(crashes) < 2 or len(ready) < 2:
            found = await rx.recv()
            if isinstance(found, KernelEvent.ServiceCrashed):
                crashes.add(found)
            elif isinstance(found, KernelEvent.Health) and found.ok and "/boom" in found.service:
                ready.add(found)
    assert crashes == {KernelEvent.ServiceCrashed(service=f"w/{n}/boom",
                                                  reason="panic: ValueError: boom")
                       for n in (0, 1)}
    assert ready == {KernelEvent.Health(service=f"w/{n}/boom", ok=True) for n in (0, 1)}
    assert kernel.metrics.counters.worker_events_relayed_total.get("w", "0") >= 2


async def test_shutdown_reaches_every_worker_and_they_drain_their_children(started):
    kernel = _kernel()
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:versions")
    await until(kernel.health.all_ready)
    running = pids(kernel)
    await kernel.shutdown(5.0)
    seen = {e.service for e in rx.try_recv_many() if isinstance(e, KernelEvent.Health)}
    assert {"w/0/seen-shutdown", "w/1/seen-shutdown"} <= seen
    assert kernel.metrics.counters.worker_kills_total.total() == 0
    assert not [pid for pid in running if alive(pid)]
    assert kernel.supervisor.snapshot()["w/0"]["state"] == "stopped"


async def test_a_worker_that_does_not_drain_is_killed_at_the_deadline_and_counted(started):
    kernel = _kernel()
    await _start(started, kernel, "workers_apps:ignores_shutdown")
    await until(kernel.health.all_ready)
    running = pids(kernel)
    begun = time.monotonic()
    await kernel.shutdown(1.0)
    assert time.monotonic() - begun < 1.0 + 2.0  # the deadline, and a generous margin
    assert kernel.metrics.counters.worker_kills_total.get("w", "0", "drain_deadline") == 1
    assert kernel.metrics.counters.worker_kills_total.get("w", "1", "drain_deadline") == 1
    await until(lambda: not [pid for pid in running if alive(pid)], within=5.0)


async def test_a_worker_whose_loop_stops_answering_is_killed_for_heartbeat_timeout(started):
    kernel = _kernel("--workers-heartbeat-timeout", "500ms")
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:blocks_loop", count=1)
    crash = await event(rx, lambda e: isinstance(e, KernelEvent.ServiceCrashed))
    assert crash == KernelEvent.ServiceCrashed(service="w/0", reason="heartbeat timeout")
    assert kernel.metrics.counters.worker_kills_total.get("w", "0", "heartbeat") >= 1


async def test_a_flooding_worker_loses_its_own_events_and_they_are_counted(started):
    kernel = _kernel("--bus-capacity", "64", events=50_000)
    await _start(started, kernel, "workers_apps:flood", count=1)
    await until(lambda: kernel.metrics.counters.worker_events_lost_total.get("w", "0") > 0)
    # the parent is not held up: it still answers and the worker is still up
    assert workers(kernel)["0"]["state"] == "up"
    assert workers(kernel)["0"]["events_lost"] > 0


async def test_a_worker_asking_for_shutdown_drains_the_whole_kernel(started):
    kernel = _kernel()
    await _start(started, kernel, "workers_apps:asks_shutdown", count=1)
    async with asyncio.timeout(START):
        await kernel.run()
    assert kernel.state == "stopped"


# ----------------------------------------------------------------------------- one config


async def test_workers_get_the_parents_config_and_each_reload_with_its_version(started):
    kernel = _kernel()
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:versions")
    await until(kernel.health.all_ready)
    assert {w["config_version"] for w in workers(kernel).values()} == {1}
    assert kernel.config_cell.reload(
        Config.from_mapping({"app": {"label": "b"}}, base=kernel.config))
    assert kernel.config.version == 2
    seen: set[str] = set()
    async with asyncio.timeout(START):
        while {"w/0/seen-v2-b", "w/1/seen-v2-b"} - seen:
            found = await rx.recv()
            if isinstance(found, KernelEvent.Health):
                seen.add(found.service)
    await until(lambda: {w["config_version"] for w in workers(kernel).values()} == {2})
    assert kernel.metrics.counters.worker_config_rounds_total.get("w", "committed") >= 1


async def test_a_reload_a_worker_refuses_is_applied_nowhere_and_rolled_back(started):
    kernel = _kernel()
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:versions")
    await until(kernel.health.all_ready)
    assert kernel.config_cell.reload(Config.from_mapping(
        {"app": {"label": "refused-in-workers"}}, base=kernel.config))
    # the parent rolls back: the old values again, as the next version, in every process
    await until(lambda: kernel.config.version == 3)
    assert kernel.config.app.label == "plain"
    seen: set[str] = set()
    async with asyncio.timeout(START):
        while {"w/0/seen-v3-plain", "w/1/seen-v3-plain"} - seen:
            found = await rx.recv()
            if isinstance(found, KernelEvent.Health):
                seen.add(found.service)
    assert not [s for s in seen if "refused" in s or "-v2-" in s]
    counters = kernel.metrics.counters
    assert counters.worker_config_rounds_total.get("w", "rolled_back") == 1
    assert counters.worker_kills_total.total() == 0


# ----------------------------------------------------------------------------- one /metrics


async def test_metrics_merge_every_workers_series_under_one_family(started):
    kernel = _kernel()
    await _start(started, kernel, "workers_apps:counting")
    await until(kernel.health.all_ready)
    text = (await kernel.metrics.scrape_text()).decode()
    assert 'app_units_total{pool="w",worker="0"} 1.0' in text
    assert 'app_units_total{pool="w",worker="1"} 1.0' in text
    assert text.count("# HELP app_units_total ") == 1
    assert text.count("# HELP service_restarts_total ") == 1
    assert 'process_cpu_seconds_total{pool="w",worker="1"}' in text
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"app_units", "service_restarts", "worker_ready"} <= families


async def test_metrics_endpoint_serves_worker_series_in_the_text_format(started):
    kernel = _kernel("--obs-http", "true", "--obs-addr", "127.0.0.1:0")
    await _start(started, kernel, "workers_apps:counting", count=1)
    await until(kernel.health.all_ready)
    url = kernel.urls()["metrics"]
    async with aiohttp.ClientSession() as session:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert 'app_units_total{pool="w",worker="0"} 1.0' in await resp.text()


async def test_a_dead_workers_series_are_kept_until_its_replacement_answers(started):
    kernel = _kernel("--sup-min-backoff", "30s", "--sup-max-backoff", "30s")
    await _start(started, kernel, "workers_apps:counting", count=1)
    await until(kernel.health.all_ready)
    assert 'app_units_total{pool="w",worker="0"} 1.0' in \
        (await kernel.metrics.scrape_text()).decode()
    os.kill(workers(kernel)["0"]["pid"], signal.SIGKILL)
    await until(lambda: workers(kernel)["0"]["state"] == "down")
    await asyncio.sleep(0.05)
    text = (await kernel.metrics.scrape_text()).decode()
    assert 'app_units_total{pool="w",worker="0"} 1.0' in text  # not lost in totals
    age = kernel.metrics.counters.worker_metrics_age_seconds.get("w", "0")
    assert age > 0
    assert kernel.metrics.counters.worker_scrape_timeouts_total.get("w", "0") == 0


async def test_readiness_needs_min_ready_workers(started):
    kernel = _kernel("--workers-min-ready", "1", "--sup-min-backoff", "30s",
                     "--sup-max-backoff", "30s")
    await _start(started, kernel, "workers_apps:ok")
    await until(lambda: kernel.status()["workers"]["w"]["ready"] == 2)
    os.kill(workers(kernel)["0"]["pid"], signal.SIGKILL)
    await until(lambda: workers(kernel)["0"]["state"] == "down")
    assert kernel.health.all_ready()  # one of two is enough
    assert kernel.metrics.counters.worker_ready.get("w", "0") == 0
    assert kernel.metrics.counters.worker_ready.get("w", "1") == 1


async def test_readiness_waits_for_every_worker_by_default(started):
    kernel = _kernel("--sup-min-backoff", "30s", "--sup-max-backoff", "30s")
    await _start(started, kernel, "workers_apps:ok")
    await until(kernel.health.all_ready)
    os.kill(workers(kernel)["1"]["pid"], signal.SIGKILL)
    await until(lambda: not kernel.health.all_ready())
    assert "service:w" in kernel.health.missing()


# ----------------------------------------------------------------------------- sockets


async def _pids_served(url: str, want: int, tries: int = 200) -> set[int]:
    """Worker pids answering on ``url`` (fresh connections) until ``want`` distinct ones."""
    seen: set[int] = set()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(tries):
            async with session.get(url) as resp:
                seen.add(int(await resp.text()))
            if len(seen) >= want:
                break
    return seen


async def test_one_socket_bound_by_the_parent_serves_every_worker(started):
    kernel = _kernel()
    sock = kernel.listen("web", "127.0.0.1:0")
    host, port = sock.getsockname()[:2]
    await _start(started, kernel, "workers_apps:serves")
    await until(kernel.health.all_ready)
    served = await _pids_served(f"http://{host}:{port}/pid", want=2)
    assert served <= set(pids(kernel)) and served
    assert kernel.status()["listen"] == {"web": f"{host}:{port}"}


async def test_a_socket_asked_for_in_the_factory_is_bound_once_by_the_parent(started):
    kernel = _kernel()
    await _start(started, kernel, "workers_apps:listens")
    await until(kernel.health.all_ready)
    assert kernel.listeners.names() == ["web"]
    host, port = kernel.listeners.get("web").getsockname()[:2]
    served = await _pids_served(f"http://{host}:{port}/pid", want=2)
    assert served <= set(pids(kernel)) and served


async def test_a_worker_asking_for_every_interface_is_refused_with_the_reason(started):
    kernel = _kernel()
    rx = kernel.bus.subscribe()
    await _start(started, kernel, "workers_apps:listens_everywhere", count=1)
    crash = await event(rx, lambda e: isinstance(e, KernelEvent.ServiceCrashed))
    assert isinstance(crash, KernelEvent.ServiceCrashed)
    assert crash.reason.startswith("exit: status 3: the app factory failed: ValueError: ")
    assert "binds every interface" in crash.reason
    assert kernel.listeners.names() == []


# ----------------------------------------------------------------------------- bad input


def test_supervise_workers_refuses_bad_arguments_before_anything_starts():
    kernel = _kernel()
    with pytest.raises(ValueError, match="pool name"):
        kernel.supervise_workers("a/b", app="workers_apps:ok", count=1)
    with pytest.raises(ValueError, match="module:factory"):
        kernel.supervise_workers("w", app="workers_apps", count=1)
    with pytest.raises(ValueError, match="worker count"):
        kernel.supervise_workers("w", app="workers_apps:ok", count=0)  # workers.count is 0
    with pytest.raises(ValueError, match="worker count"):
        kernel.supervise_workers("w", app="workers_apps:ok", count=-1)
    with pytest.raises(ValueError, match="cannot be imported by another process"):
        kernel.supervise_workers("w", app=lambda k: None, count=1)
    assert kernel.supervisor.snapshot() == {}


def test_min_ready_above_the_count_is_refused():
    kernel = _kernel("--workers-min-ready", "3")
    with pytest.raises(ValueError, match="min_ready"):
        kernel.supervise_workers("w", app="workers_apps:ok", count=2)


def test_more_workers_than_four_per_cpu_warns(monkeypatch: pytest.MonkeyPatch):
    stream = io.StringIO()
    _logging.configure_logging(stream=stream)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    kernel = _kernel()
    kernel.supervise_workers("w", app="workers_apps:ok", count=5)  # not started: no process
    assert '"event":"workers_oversubscribed"' in stream.getvalue()
    assert '"cpus":1' in stream.getvalue()


@pytest.mark.parametrize(("value", "reason"), [("-1", "out of range"),
                                               ("two", "not an integer")])
def test_a_bad_worker_count_is_a_config_error_naming_key_and_source(value: str, reason: str):
    from ron_kernel.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        Config.load(argv=["--workers", value], env={})
    assert f"workers.count = '{value}' (from cli:--workers): {reason}" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        Config.load(env={"RONK_WORKERS": value})
    assert "(from env:RONK_WORKERS)" in str(caught.value)


# ----------------------------------------------------------------------------- control

CONTROL_TOKEN = "worker-control-token-0123456789"


async def test_control_reaches_a_workers_own_children_through_the_parent(
        started, monkeypatch: pytest.MonkeyPatch):
    # POST /control/<action>/<pool>/<i>/<child> on the parent acts in worker i, as the page's
    # buttons on a worker's children do; what the worker cannot do is said, never a 500
    kernel = _kernel("--sup-restart-cap", "1", "--obs-http", "true", "--obs-addr",
                     "127.0.0.1:0", "--obs-control-token", CONTROL_TOKEN)
    await _start(started, kernel, "workers_apps:quarantines")
    await until(lambda: all(w["children"].get("bad", {}).get("state") == "quarantined"
                            for w in workers(kernel).values()))
    base = kernel.urls()["base"]
    auth = {"Authorization": f"Bearer {CONTROL_TOKEN}"}

    async def post(path: str) -> tuple[int, dict[str, Any]]:
        async with session.post(f"{base}/control/{path}", headers=auth) as resp:
            return resp.status, await resp.json()

    async with aiohttp.ClientSession() as session:
        status, body = await post("release/w/1/bad")
        assert (status, body["ok"], body["child"]) == (200, True, "w/1/bad")
        assert body["state"] in ("starting", "running", "backing_off", "quarantined")
        # released in worker 1 only: it crashes, restarts and quarantines again there
        await until(lambda: workers(kernel)["1"]["children"]["bad"]["restarts"] >= 2)
        assert workers(kernel)["0"]["children"]["bad"]["restarts"] == 1
        status, body = await post("release/w/0/svc")  # running: nothing to release
        assert status == 409 and body["ok"] is False and "not quarantined" in body["error"]
        rx = kernel.bus.subscribe()
        status, body = await post("restart/w%2F0/svc")  # as the page encodes the path
        assert (status, body["state"], body["child"]) == (200, "running", "w/0/svc")
        # the worker's own restart: its child went unready and ready again, relayed as w/0/svc
        await event(rx, lambda e: e == KernelEvent.Health(service="w/0/svc", ok=False))
        await event(rx, lambda e: e == KernelEvent.Health(service="w/0/svc", ok=True))
        status, body = await post("restart/w/0/nope")
        assert status == 404 and "w/0/svc" in body["known"] and "w/1" in body["known"]
        # a worker that does not answer (stopped): 503 once the control timeout passes, not
        # a hang and not a 404; the parent goes on serving
        monkeypatch.setattr(_workers, "CONTROL_TIMEOUT", 0.5)
        victim = workers(kernel)["1"]["pid"]
        os.kill(victim, signal.SIGSTOP)
        try:
            status, body = await post("release/w/1/bad")
        finally:
            os.kill(victim, signal.SIGCONT)
        assert status == 503 and body["ok"] is False and "w/1 did not answer" in body["error"]
    counts = kernel.metrics.counters.control_requests_total
    assert counts.get("release", "ok") >= 1 and counts.get("restart", "not_found") == 1
    assert counts.get("release", "unavailable") == 1
