"""End to end: the real ``ron-kernel`` command in subprocesses, real signals, loopback HTTP.

Each test runs in its own empty working directory (so ``./Config.toml`` is the test's), with no
``RONK_*`` variables inherited, and every wait is bounded. Startup and Ctrl-C latencies are
printed (run with ``-s``), never asserted beyond the promised bounds.
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

PY = sys.executable
URL_LINE = re.compile(r"ron-kernel: observability on (http://127\.0\.0\.1:\d+) ")
OBS = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0"]
GOLDEN = ("bus_lagged_total", "service_restarts_total", "request_latency_seconds",
          "tasks_spawned_total", "tasks_aborted_total", "config_reloads_total",
          "ron_kernel_info")


def _env(**extra: str) -> dict[str, str]:
    # nothing of the developer's environment may configure the kernel under test
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RONK_", "RON_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Proc:
    """A ``python -m ron_kernel ...`` process with stdout/stderr captured to files."""

    def __init__(self, cwd: Path, args: list[str], env: dict[str, str] | None = None,
                 name: str = "kernel") -> None:
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        self.started = time.perf_counter()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen([PY, "-m", "ron_kernel", *args], cwd=cwd,
                                      env=env or _env(), stdout=out, stderr=err)

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_until(self, what: str, cond: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if self.p.poll() is not None and not cond():
                raise AssertionError(f"process exited ({self.p.returncode}) before {what}:\n"
                                     f"{self.out}\n{self.err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.out}\n"
                                     f"{self.err[-3000:]}")
            time.sleep(0.01)

    def base_url(self) -> str:
        match = self.wait_until("the observability URL line",
                                lambda: URL_LINE.search(self.out))
        return str(match.group(1))

    def signal(self, sig: signal.Signals) -> None:
        self.p.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.p.wait(timeout=timeout)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=5)


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:  # only the processes this test started, by their handles
        proc.kill()


def _http(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _json(url: str) -> Any:
    status, body = _http(url)
    assert status == 200, (url, status, body)
    return json.loads(body)


def _wait_ready(proc: Proc, base: str, timeout: float = 20.0) -> float:
    proc.wait_until("/readyz 200", lambda: _http(base + "/readyz")[0] == 200, timeout)
    return time.perf_counter() - proc.started


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


# ----------------------------------------------------------------------------- the demo, whole


def test_demo_run_ready_metrics_sighup_reload_invalid_reload_and_ctrl_c(cwd, procs):
    config = cwd / "Config.toml"
    config.write_text('[log]\nlevel = "info"\n[shutdown]\ndrain_deadline = "2s"\n')
    kernel = Proc(cwd, ["run", *OBS])
    procs.append(kernel)
    base = kernel.base_url()
    ready_s = _wait_ready(kernel, base)
    print(f"\nrun -> /readyz 200: {ready_s * 1e3:.0f} ms (target <= 1500 ms)")
    assert ready_s < 5.0

    status, metrics = _http(base + "/metrics")
    assert status == 200
    text = metrics.decode()
    missing = [name for name in GOLDEN if name not in text]
    assert missing == []
    assert _json(base + "/status")["config_version"] == 1
    assert "ron-kernel tail --url" in kernel.out

    tail = Proc(cwd, ["tail", "--url", base], name="tail")
    procs.append(tail)
    kernel.wait_until("the tail client subscribed",
                      lambda: _json(base + "/status")["bus"]["receivers"] >= 2)

    # a valid change + SIGHUP -> one ConfigUpdated, seen by the tail client
    config.write_text('[log]\nlevel = "debug"\n[shutdown]\ndrain_deadline = "2s"\n')
    kernel.signal(signal.SIGHUP)
    tail.wait_until("ConfigUpdated in tail", lambda: '"ConfigUpdated"' in tail.out)
    assert {"type": "ConfigUpdated", "version": 2} in _events(tail.out)
    assert _json(base + "/status")["config_version"] == 2
    assert '"trigger":"SIGHUP"' in kernel.err

    # an invalid file + SIGHUP -> rejected, old config kept, still ready
    config.write_text('[bus]\ncapacity = 0\n')
    kernel.signal(signal.SIGHUP)
    kernel.wait_until("the rejection logged",
                      lambda: kernel.err.count('"config_reload_rejected"') >= 1)
    kernel.wait_until("the SIGHUP rejection logged",
                      lambda: kernel.err.count('"trigger":"SIGHUP"') >= 2)
    assert "bus.capacity" in kernel.err
    state = _json(base + "/status")
    assert state["config_version"] == 2 and state["readiness"]["ready"] is True
    assert _http(base + "/readyz")[0] == 200
    assert sum(e["type"] == "ConfigUpdated" for e in _events(tail.out)) == 1
    assert _metric(_http(base + "/metrics")[1].decode(), "config_reloads_total",
                   outcome="rejected") is not None

    # Ctrl-C -> Shutdown seen by the tail client, exit 0 within the drain deadline
    t0 = time.perf_counter()
    kernel.signal(signal.SIGINT)
    assert kernel.wait(timeout=2.0 + 1.0) == 0
    exit_ms = (time.perf_counter() - t0) * 1e3
    print(f"Ctrl-C -> exit (healthy demo children, one tail client): {exit_ms:.0f} ms "
          f"(target <= 200 ms beyond the children's drain)")
    assert tail.wait(timeout=3.0) == 0
    assert _events(tail.out)[-1] == {"type": "Shutdown"}
    assert '"shutdown_complete"' in kernel.err


# ----------------------------------------------------------------------------- --app modules


CRASHY = """
import asyncio

async def steady(ctx):
    ctx.ready()
    await ctx.shutdown.wait()

async def flaky(ctx):
    ctx.ready()
    await asyncio.sleep(0.05)
    raise RuntimeError("test crash: disk on fire")

def build(kernel):  # a sync factory
    kernel.supervise("steady", steady)
    kernel.supervise("flaky-worker", flaky)
"""

SLOW_DRAIN = """
import asyncio

async def stubborn(ctx):
    ctx.ready()
    await ctx.shutdown.wait()
    print("stubborn: draining slowly", flush=True)
    await asyncio.sleep(30)

async def build(kernel):  # an async factory
    await asyncio.sleep(0)
    kernel.supervise("stubborn", stubborn)
"""


def test_app_sync_factory_crashes_are_events_and_restarts_count(cwd, procs):
    (cwd / "crashy_app.py").write_text(textwrap.dedent(CRASHY))
    kernel = Proc(cwd, ["run", *OBS, "--app", "crashy_app:build", "--sup-min-backoff", "10ms",
                        "--sup-max-backoff", "50ms", "--sup-restart-cap", "1000"])
    procs.append(kernel)
    base = kernel.base_url()
    tail = Proc(cwd, ["tail", "--url", base], name="tail")
    procs.append(tail)
    tail.wait_until("a ServiceCrashed event", lambda: '"ServiceCrashed"' in tail.out)
    crash = next(e for e in _events(tail.out) if e["type"] == "ServiceCrashed")
    assert crash["service"] == "flaky-worker"
    assert "test crash: disk on fire" in crash["reason"]

    def restarts() -> float:
        return _metric(_http(base + "/metrics")[1].decode(), "service_restarts_total",
                       service="flaky-worker") or 0.0

    first = kernel.wait_until("a restart counted", restarts)
    kernel.wait_until("restarts rising", lambda: restarts() > first)
    snapshot = _json(base + "/status")["supervisor"]
    assert snapshot["steady"]["restarts"] == 0
    assert snapshot["flaky-worker"]["restarts"] >= 1
    assert "disk on fire" in snapshot["flaky-worker"]["last_reason"]
    assert "steady" in _json(base + "/readyz")["services"]
    # no demo services with --app
    assert "heartbeat" not in snapshot

    kernel.signal(signal.SIGTERM)
    assert kernel.wait(timeout=6.0) == 0
    assert tail.wait(timeout=3.0) == 0
    assert _events(tail.out)[-1] == {"type": "Shutdown"}


def test_app_async_factory_and_a_second_ctrl_c_during_a_slow_drain_exits_at_once(cwd, procs):
    (cwd / "slow_app.py").write_text(textwrap.dedent(SLOW_DRAIN))
    kernel = Proc(cwd, ["run", *OBS, "--app", "slow_app:build", "--drain-deadline", "20s"])
    procs.append(kernel)
    base = kernel.base_url()
    _wait_ready(kernel, base)
    assert _json(base + "/readyz")["services"] == {"stubborn": True}
    kernel.signal(signal.SIGINT)
    kernel.wait_until("the slow drain", lambda: "draining slowly" in kernel.out)
    assert kernel.p.poll() is None  # still draining
    t0 = time.perf_counter()
    kernel.signal(signal.SIGINT)
    assert kernel.wait(timeout=3.0) == 130
    print(f"\nsecond Ctrl-C -> exit: {(time.perf_counter() - t0) * 1e3:.0f} ms")
    assert "second SIGINT while draining" in kernel.err


def test_the_console_script_imports_app_modules_from_the_working_directory(cwd):
    script = Path(sys.executable).with_name("ron-kernel")
    assert script.exists(), "the package is installed with its console script"
    (cwd / "here_app.py").write_text(textwrap.dedent(CRASHY))
    with open(cwd / "script.out", "wb") as out, open(cwd / "script.err", "wb") as err:
        p = subprocess.Popen([str(script), "run", *OBS, "--app", "here_app:build"], cwd=cwd,
                             env=_env(), stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while "observability on" not in (cwd / "script.out").read_text():
            assert p.poll() is None, (cwd / "script.err").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=6) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)


def test_app_errors_are_one_line_usage_errors(cwd):
    (cwd / "not_callable.py").write_text("build = 42\n")
    for spec, needle in (("nocolon", "MODULE:FACTORY"), ("no_such_mod:f", "cannot import"),
                         ("not_callable:missing", "no attribute"),
                         ("not_callable:build", "not callable")):
        done = subprocess.run([PY, "-m", "ron_kernel", "run", "--app", spec], cwd=cwd,
                              env=_env(), capture_output=True, text=True, timeout=10)
        assert done.returncode == 2, (spec, done.stderr)
        assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr


def test_a_failing_factory_and_a_taken_port_exit_1_with_one_line(cwd):
    import socket

    (cwd / "broken_app.py").write_text("def build(kernel):\n    raise KeyError('db_url')\n")
    done = subprocess.run([PY, "-m", "ron_kernel", "run", "--app", "broken_app:build"],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "ron-kernel: the --app factory failed: KeyError: 'db_url'")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([PY, "-m", "ron_kernel", "run", "--obs-http", "true",
                               "--obs-addr", f"127.0.0.1:{port}"], cwd=cwd, env=_env(),
                              capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    last = done.stderr.splitlines()[-1]
    assert last.startswith("ron-kernel: ") and str(port) in last, done.stderr


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args", [
    ["run", "--bogus"],
    ["run", "--obs-http"],           # a flag without its value
    ["frobnicate"],
    [],
    ["config"],
    ["tail", "--url"],
    ["perf", "bus-fanout"],          # the rigs are not installed: `make perf` runs them
], ids=lambda a: " ".join(a) or "no-command")
def test_bad_flags_exit_2_with_one_line(cwd, args):
    done = subprocess.run([PY, "-m", "ron_kernel", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "error:" in lines[0], done.stderr


def test_invalid_config_at_start_exits_1_listing_every_problem(cwd):
    (cwd / "Config.toml").write_text('[log]\nlevel = "loud"\n')
    started = time.perf_counter()
    done = subprocess.run([PY, "-m", "ron_kernel", "run", "--sup-min-backoff", "5"], cwd=cwd,
                          env=_env(RONK_BUS_CAPACITY="0"), capture_output=True, text=True,
                          timeout=10)
    assert done.returncode == 1
    assert time.perf_counter() - started < 5
    assert "3 problems" in done.stderr
    for needle in ("bus.capacity", "env:RONK_BUS_CAPACITY", "supervisor.min_backoff",
                   "cli:--sup-min-backoff", "log.level", "file:"):
        assert needle in done.stderr, needle


# ----------------------------------------------------------------------------- config check


def test_config_check_prints_every_key_with_its_source(cwd):
    (cwd / "Config.toml").write_text('[supervisor]\nrestart_cap = 7\n')
    done = subprocess.run([PY, "-m", "ron_kernel", "config", "check", "--bus-capacity", "8"],
                          cwd=cwd, env=_env(RONK_LOG_LEVEL="debug"), capture_output=True,
                          text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    from ron_kernel._config import FIELDS

    assert set(rows) == set(FIELDS)
    assert rows["bus.capacity"].split()[1] == "8"
    assert rows["bus.capacity"].endswith("# cli:--bus-capacity")
    assert rows["log.level"].endswith("# env:RONK_LOG_LEVEL")
    assert "# file:" in rows["supervisor.restart_cap"]
    assert rows["supervisor.restart_cap"].split()[1] == "7"
    assert rows["pq.mode"].endswith("# default")
    assert "config check: ok" in done.stderr

    # RON_CONFIG names another file; the runbook's env alias sets the observability address
    (cwd / "conf").mkdir()
    (cwd / "conf" / "k.toml").write_text('[bus]\ncapacity = 16\n')
    done = subprocess.run([PY, "-m", "ron_kernel", "config", "check"], cwd=cwd,
                          env=_env(RON_CONFIG="conf/k.toml",
                                   RON_KERNEL_METRICS_ADDR="127.0.0.1:9999"),
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert rows["bus.capacity"].split()[1] == "16"
    assert f"# file:{cwd / 'conf' / 'k.toml'}" in rows["bus.capacity"]
    assert "127.0.0.1:9999" in rows["observability.addr"]
    assert rows["observability.addr"].endswith("# env:RON_KERNEL_METRICS_ADDR")


def test_config_check_exits_1_with_every_problem(cwd):
    done = subprocess.run([PY, "-m", "ron_kernel", "config", "check", "--bus-capacity", "0",
                           "--drain-deadline", "soon"], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "bus.capacity" in done.stderr and "shutdown.drain_deadline" in done.stderr


# ----------------------------------------------------------------------------- help, version


def test_version(cwd):
    from ron_kernel import __version__

    done = subprocess.run([PY, "-m", "ron_kernel", "--version"], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 0
    assert done.stdout.strip() == f"ron-kernel {__version__}"


@pytest.mark.parametrize("args", [[], ["run"], ["config"], ["config", "check"], ["tail"]],
                         ids=lambda a: " ".join(a) or "top")
def test_help_on_every_command(cwd, args):
    done = subprocess.run([PY, "-m", "ron_kernel", *args, "--help"], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ron-kernel")
    if args == ["run"]:
        assert "--app" in done.stdout and "--obs-addr" in done.stdout
    if args == ["tail"]:
        assert "--no-retry" in done.stdout


def test_tail_no_retry_against_a_closed_port_exits_1(cwd):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([PY, "-m", "ron_kernel", "tail", "--no-retry", "--url",
                           f"http://127.0.0.1:{port}"], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("tail: ") and len(done.stderr.splitlines()) == 1


def test_tail_retries_until_the_kernel_comes_up_and_exits_0_on_shutdown(cwd, procs):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    tail = Proc(cwd, ["tail", "--url", base], name="tail")
    procs.append(tail)
    tail.wait_until("a retry notice", lambda: "retrying in" in tail.err)
    kernel = Proc(cwd, ["run", "--obs-http", "true", "--obs-addr", f"127.0.0.1:{port}"])
    procs.append(kernel)
    assert kernel.base_url() == base
    _wait_ready(kernel, base)
    kernel.wait_until("the tail client subscribed",
                      lambda: _json(base + "/status")["bus"]["receivers"] >= 2)
    kernel.signal(signal.SIGINT)
    assert kernel.wait(timeout=6.0) == 0
    assert tail.wait(timeout=3.0) == 0
    assert _events(tail.out)[-1] == {"type": "Shutdown"}
