"""The control routes over real loopback HTTP: POST /control/{release,restart}/<child>, /reload.

Order of the answers (src/ron_kernel/_control.py): off -> 404, method -> 405, body -> 413,
token -> 401, child -> 404 with the known names, state -> 409, then the action.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ron_kernel import KernelEvent, _logging
from ron_kernel.config import explain
from ron_kernel.errors import Empty
from ron_kernel.kernel import Kernel
from ron_kernel.logging import configure_logging
from ron_kernel.supervisor import ChildContext, Supervisor

TOKEN = "s3cr3t-control-token-0123456789"
OTHER = "an0ther-control-token-9876543210"
ARGV = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RON_CONFIG", raising=False)
    yield


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(stream=out)
    yield out
    _logging.reset_logging()


async def _until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _drain(rx: Any) -> list[KernelEvent]:
    out = []
    while True:
        try:
            out.append(rx.try_recv())
        except Empty:
            return out


class Runs:
    """Counts the starts of each child."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}

    def steady(self, name: str) -> Any:
        async def child(ctx: ChildContext) -> None:
            self.starts[name] = self.starts.get(name, 0) + 1
            ctx.ready()
            await ctx.shutdown.wait()

        return child

    def crasher(self, name: str) -> Any:
        async def child(ctx: ChildContext) -> None:
            self.starts[name] = self.starts.get(name, 0) + 1
            if self.starts[name] <= 2:
                raise RuntimeError("boom")  # twice: with restart_cap 1, quarantined
            ctx.ready()
            await ctx.shutdown.wait()

        return child


@asynccontextmanager
async def kernel(token: str | None = TOKEN, path: Path | None = None,
                 argv: list[str] | None = None) -> AsyncIterator[tuple[Kernel, str, Runs]]:
    env = {"RONK_CONTROL_TOKEN": token} if token is not None else {}
    runs = Runs()
    k = Kernel(path=path, env=env, argv=[*ARGV, "--sup-restart-cap", "1",
                                         "--sup-min-backoff", "0s", "--sup-max-backoff", "1ms",
                                         *(argv or [])],
               watch_config=False, handle_sighup=False)
    k.supervise("worker", runs.steady("worker"))
    k.supervise("flaky", runs.crasher("flaky"))
    inner = Supervisor(name="outer")
    inner.add("leaf", runs.steady("leaf"))
    k.supervise("outer", inner)
    async with k:
        yield k, k.urls()["base"], runs


async def _post(session: aiohttp.ClientSession, url: str, token: str | None = TOKEN,
                **kwargs: Any) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.post(url, headers=headers, **kwargs) as resp:
        return resp.status, orjson.loads(await resp.read()), resp.headers


async def test_without_a_token_every_control_route_is_404_like_an_unknown_path(log):
    async with kernel(token=None) as (k, base, _), aiohttp.ClientSession() as s:
        for path in ("/control/reload", "/control/release/worker", "/control/restart/nope"):
            for method in ("POST", "GET", "DELETE"):
                async with s.request(method, base + path,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert r.status == 404
                    assert orjson.loads(await r.read()) == {"error": "not found", "path": path}
        # even a body over the limit: a route that is off tells nothing
        status, _, _ = await _post(s, base + "/control/reload", data=b"x" * 5000)
        assert status == 404
        async with s.get(base + "/no/such/path") as r:
            assert orjson.loads(await r.read()) == {"error": "not found", "path": "/no/such/path"}
        counted = k.metrics.counters.control_requests_total
        assert counted.get("reload", "disabled") == 4
        assert counted.get("restart", "disabled") == 3


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", f"Token {TOKEN}", f"Bearer {TOKEN} x",
    f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Bearer {OTHER}", f"bearer{TOKEN}",
])
async def test_a_missing_malformed_or_wrong_authorization_is_401_with_a_bearer_challenge(
        header, log):
    async with kernel() as (k, base, runs), aiohttp.ClientSession() as s:
        headers = {} if header is None else {"Authorization": header}
        for path in ("/control/reload", "/control/restart/worker", "/control/release/flaky"):
            status, body, resp_headers = await _post(s, base + path, token=None,
                                                     headers=headers)
            assert status == 401, (header, path)
            assert resp_headers["WWW-Authenticate"].startswith('Bearer realm="ron-kernel"')
            assert body["ok"] is False
        assert k.metrics.counters.control_requests_total.get("restart", "unauthorized") == 1
        assert runs.starts["worker"] == 1  # nothing happened
        assert k.config.version == 1
    assert TOKEN not in log.getvalue() and TOKEN[:-1] not in log.getvalue()


async def test_the_scheme_is_case_insensitive_and_a_correct_token_is_accepted():
    async with kernel() as (_, base, _), aiohttp.ClientSession() as s:
        status, body, _ = await _post(s, base + "/control/reload", token=None,
                                      headers={"Authorization": f"bearer {TOKEN}"})
        assert status == 200 and body["ok"] is True


async def test_other_methods_are_405_with_allow_post():
    async with kernel() as (_, base, _), aiohttp.ClientSession() as s:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            async with s.request(method, base + "/control/restart/worker",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 405
                assert r.headers["Allow"] == "POST"


async def test_a_small_body_is_accepted_and_one_over_1_kib_is_413_declared_or_chunked(log):
    async with kernel() as (k, base, runs), aiohttp.ClientSession() as s:
        status, body, _ = await _post(s, base + "/control/restart/worker",
                                      json={"reason": "deploy"})
        assert status == 200 and body["ok"] is True
        status, _, _ = await _post(s, base + "/control/reload", data=b"x" * 1024)
        assert status == 200
        for token in (TOKEN, "wrong-token-wrong-token", None):
            status, body, _ = await _post(s, base + "/control/reload", token=token,
                                          data=b"x" * 1025)
            assert status == 413, token
            assert "1024 bytes" in body["error"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b"y" * 200

        status, _, _ = await _post(s, base + "/control/restart/worker", data=chunks())
        assert status == 413
        assert runs.starts["worker"] == 2  # only the first restart happened
        assert k.metrics.counters.control_requests_total.get("reload", "too_large") == 3
        # a matched GET of another route still refuses any body (method before body)
        async with s.get(base + "/status", data=b"x") as r:
            assert r.status == 413
        async with s.post(base + "/status", data=b"x" * 5000) as r:
            assert r.status == 405


async def test_an_unknown_child_is_404_listing_the_known_names_nested_ones_too():
    async with kernel() as (k, base, _), aiohttp.ClientSession() as s:
        for action in ("release", "restart"):
            status, body, _ = await _post(s, f"{base}/control/{action}/nope")
            assert status == 404
            assert body["known"] == ["worker", "flaky", "outer", "outer/leaf"]
            assert body["known_total"] == 4
            assert "'nope'" in body["error"]
        status, body, _ = await _post(s, f"{base}/control/restart/outer/nope")
        assert status == 404
        status, body, _ = await _post(s, f"{base}/control/restart/worker/leaf")
        assert status == 404  # worker is no supervisor
        assert k.metrics.counters.control_requests_total.get("restart", "not_found") == 3


async def test_release_of_a_child_not_in_quarantine_is_409_and_of_a_quarantined_one_200(log):
    async with kernel() as (k, base, runs), aiohttp.ClientSession() as s:
        await _until(lambda: k.supervisor.snapshot()["flaky"]["state"] == "quarantined")
        assert not k.health.all_ready()
        rx = k.bus.subscribe()
        status, body, _ = await _post(s, base + "/control/release/worker")
        assert status == 409
        assert body == {"ok": False, "error": "child 'worker' is not quarantined",
                        "child": "worker", "state": "running"}
        status, body, _ = await _post(s, base + "/control/release/flaky")
        assert status == 200
        assert body["ok"] is True and body["child"] == "flaky"
        await _until(k.health.all_ready)
        assert runs.starts["flaky"] == 3
        assert k.metrics.counters.supervisor_quarantined.get("flaky") == 0
        # the usual event: the released child reported ready again
        events = _drain(rx)
        assert KernelEvent.Health(service="flaky", ok=True) in events
        counted = k.metrics.counters.control_requests_total
        assert (counted.get("release", "conflict"), counted.get("release", "ok")) == (1, 1)
    lines = [orjson.loads(line) for line in log.getvalue().splitlines()]
    [done] = [line for line in lines if line["event"] == "control_action"]
    assert done["action"] == "release" and done["child"] == "flaky" and done["status"] == 200
    assert done["peer"] == "127.0.0.1"
    [refused] = [line for line in lines if line["event"] == "control_refused"]
    assert refused["outcome"] == "conflict" and refused["child"] == "worker"


async def test_restart_stops_and_starts_the_child_now_as_an_operator_restart_not_a_crash():
    async with kernel() as (k, base, runs), aiohttp.ClientSession() as s:
        await _until(lambda: k.health.snapshot()["services"].get("worker") is True)
        rx = k.bus.subscribe()
        status, body, _ = await _post(s, base + "/control/restart/worker")
        assert status == 200
        assert body == {"ok": True, "action": "restart", "child": "worker", "state": "running"}
        assert runs.starts["worker"] == 2
        info = k.supervisor.snapshot()["worker"]
        assert (info["restarts"], info["attempt"]) == (0, 0)
        assert k.metrics.counters.service_restarts_total.get("worker") == 0
        await _until(lambda: k.health.snapshot()["services"]["worker"] is True)
        events = [e for e in _drain(rx) if getattr(e, "service", None) == "worker"]
        assert events == [KernelEvent.Health(service="worker", ok=False),
                          KernelEvent.Health(service="worker", ok=True)]  # no ServiceCrashed
        # a nested child by its path
        status, body, _ = await _post(s, base + "/control/restart/outer/leaf")
        assert status == 200 and body["child"] == "outer/leaf"
        assert runs.starts["leaf"] == 2
        # restarting a quarantined child takes it out of quarantine
        await _until(lambda: k.supervisor.snapshot()["flaky"]["state"] == "quarantined")
        status, body, _ = await _post(s, base + "/control/restart/flaky")
        assert status == 200
        await _until(k.health.all_ready)


async def test_reload_applies_publishes_config_updated_and_a_rejected_one_is_422(tmp_path):
    cfg = tmp_path / "Config.toml"
    cfg.write_text('[log]\nlevel = "info"\n')
    async with kernel(path=cfg) as (k, base, _), aiohttp.ClientSession() as s:
        rx = k.bus.subscribe()
        status, body, _ = await _post(s, base + "/control/reload")
        assert (status, body) == (200, {"ok": True, "action": "reload", "outcome": "unchanged",
                                        "version": 1})
        cfg.write_text('[log]\nlevel = "warn"\n')
        status, body, _ = await _post(s, base + "/control/reload")
        assert (status, body["outcome"], body["version"]) == (200, "applied", 2)
        assert [e for e in _drain(rx) if isinstance(e, KernelEvent.ConfigUpdated)] == [
            KernelEvent.ConfigUpdated(version=2)]
        cfg.write_text('[log]\nlevel = "loud"\n')
        status, body, _ = await _post(s, base + "/control/reload")
        assert status == 422
        assert body["version"] == 2 and "log.level" in body["problems"][0]
        assert k.config.log.level == "warn"
        counted = k.metrics.counters.control_requests_total
        assert (counted.get("reload", "ok"), counted.get("reload", "rejected")) == (2, 1)


async def test_a_reload_rotates_the_token_at_once_and_the_diff_hides_both(tmp_path, log):
    cfg = tmp_path / "Config.toml"
    cfg.write_text(f'[observability]\ncontrol_token = "{TOKEN}"\n')
    async with kernel(token=None, path=cfg) as (_, base, _), aiohttp.ClientSession() as s:
        cfg.write_text(f'[observability]\ncontrol_token = "{OTHER}"\n')
        status, body, _ = await _post(s, base + "/control/reload")
        assert (status, body["outcome"]) == (200, "applied")
        status, _, _ = await _post(s, base + "/control/reload")
        assert status == 401
        status, _, _ = await _post(s, base + "/control/reload", token=OTHER)
        assert status == 200
        cfg.write_text("[observability]\ncontrol_token = \"\"\n")  # control off again
        status, _, _ = await _post(s, base + "/control/reload", token=OTHER)
        assert status == 200
        status, _, _ = await _post(s, base + "/control/reload", token=OTHER)
        assert status == 404
        async with s.get(base + "/status") as r:
            status_text = await r.text()
    text = log.getvalue()
    assert TOKEN not in text and OTHER not in text and TOKEN not in status_text
    updated = [orjson.loads(line) for line in text.splitlines()
               if '"config_updated"' in line]
    assert updated[0]["changed"] == [{"key": "observability.control_token", "old": "***",
                                      "new": "***", "applies": "immediate"}]


async def test_the_token_is_never_in_a_log_line_status_metrics_or_config_check(log, capsys):
    async with kernel() as (k, base, _), aiohttp.ClientSession() as s:
        for path in ("/control/reload", "/control/restart/worker", "/control/release/flaky",
                     "/control/release/nope"):
            await _post(s, base + path)
            await _post(s, base + path, token=TOKEN + "x")
        exposed = []
        for path in ("/status", "/metrics", "/readyz"):
            async with s.get(base + path) as r:
                exposed.append(await r.text())
        assert repr(k.config).find(TOKEN) == -1
    assert all(TOKEN not in text for text in exposed)
    assert "control_requests_total" in exposed[1]
    assert TOKEN not in log.getvalue() and "control_action" in log.getvalue()
    rows = {row.key: row for row in explain(env={"RONK_CONTROL_TOKEN": TOKEN})}
    assert rows["observability.control_token"].value == "***"
    assert rows["observability.control_token"].source == "env:RONK_CONTROL_TOKEN"
    from ron_kernel.cli import main

    assert main(["config", "check", "--obs-control-token", TOKEN]) == 0
    out, err = capsys.readouterr()
    assert "observability.control_token" in out and TOKEN not in out + err


@pytest.mark.parametrize(("value", "reason"), [
    ("short", "5 characters"),
    ("has a space in the middle!!", "spaces"),
    ("x" * 257, "257 characters"),
    ("tab\tinside-the-token-value", "spaces"),
    ("caf\u00e9-control-token-0123456", "non-ASCII"),
])
def test_a_bad_token_is_a_config_error_naming_key_and_source_never_the_value(value, reason):
    from ron_kernel import Config
    from ron_kernel.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        Config.load(env={"RONK_CONTROL_TOKEN": value}, argv=[])
    [problem] = err.value.problems
    assert problem.startswith("observability.control_token = *** (from env:RONK_CONTROL_TOKEN)")
    assert reason in problem and value not in str(err.value)


async def test_the_right_token_works_while_wrong_ones_keep_coming():
    async with kernel() as (_, base, runs), aiohttp.ClientSession() as s:
        wrong = [_post(s, base + "/control/restart/worker", token=f"wrong-{i:020d}")
                 for i in range(50)]
        right = _post(s, base + "/control/restart/worker")
        results = await asyncio.gather(*wrong, right)
        assert [r[0] for r in results] == [401] * 50 + [200]
        assert runs.starts["worker"] == 2


async def test_a_reload_cancelled_by_shutdown_is_503_and_routes_work_without_counters():
    from ron_kernel import Metrics
    from ron_kernel._control import control_routes

    class Cancelled:
        version = 7
        last_reload = None

        def request_reload(self, trigger: str = "request") -> asyncio.Future[bool]:
            assert trigger == "control"
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            future.cancel()  # what cancel_pending_reloads does at shutdown
            return future

    sup = Supervisor(name="root")
    sup.add("idle", Runs().steady("idle"))  # never started
    routes = control_routes(token=lambda: TOKEN, supervisor=sup, reloader=Cancelled(),
                            counters=None)
    task, (host, port) = await Metrics().serve("127.0.0.1:0", extra_routes=routes)
    try:
        async with aiohttp.ClientSession() as s:
            status, body, _ = await _post(s, f"http://{host}:{port}/control/reload")
            assert status == 503 and "shutting down" in body["error"]
            status, body, _ = await _post(s, f"http://{host}:{port}/control/restart/x")
            assert (status, body["known"]) == (404, ["idle"])
            status, body, _ = await _post(s, f"http://{host}:{port}/control/restart/idle")
            assert status == 409 and "not running" in body["error"]
            status, body, _ = await _post(s, f"http://{host}:{port}/control/release/x")
            assert status == 404
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
