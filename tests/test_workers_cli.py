"""``ron-kernel run --workers N``: the command's view of worker processes, end to end.

Real ``ron-kernel`` processes (the helpers of ``test_e2e_cli``), real worker processes,
loopback HTTP, real signals; every process a test starts is stopped by it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from _procs import alive
from test_e2e_cli import OBS, PY, Proc, _env, _http, _json, _metric

TESTS = Path(__file__).resolve().parent


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


def test_run_with_workers_supervises_them_and_drains_them_on_sigterm(cwd, procs):
    kernel = Proc(cwd, ["run", "--workers", "2", "--drain-deadline", "3s", *OBS])
    procs.append(kernel)
    base = kernel.base_url()
    kernel.wait_until("both workers up", lambda: _json(base + "/status")["workers"]
                      ["worker"]["ready"] == 2, timeout=60)
    kernel.wait_until("/readyz 200", lambda: _http(base + "/readyz")[0] == 200, timeout=30)
    state = _json(base + "/status")
    assert {"worker/0", "worker/1"} <= set(state["supervisor"])
    pids = [w["pid"] for w in state["workers"]["worker"]["workers"].values()]
    assert len(set(pids)) == 2 and kernel.p.pid not in pids
    text = _http(base + "/metrics")[1].decode()
    assert _metric(text, "process_cpu_seconds_total", pool="worker", worker="1") is not None
    assert _metric(text, "worker_ready", pool="worker", worker="0") == 1.0
    kernel.signal(signal.SIGTERM)
    assert kernel.wait(timeout=3.0 + 5.0) == 0
    assert not [pid for pid in pids if alive(pid)]
    assert '"worker_killed"' not in kernel.err  # they drained in time


def test_run_with_workers_serves_one_port_from_every_worker(cwd, procs):
    env = _env(PYTHONPATH=str(TESTS))
    kernel = Proc(cwd, ["run", "--app", "workers_apps:listens", "--workers", "2", *OBS],
                  env=env)
    procs.append(kernel)
    base = kernel.base_url()
    kernel.wait_until("both workers ready", lambda: _json(base + "/status")["workers"]
                      ["worker"]["ready"] == 2, timeout=60)
    state = _json(base + "/status")
    addr = state["listen"]["web"]
    pids = {w["pid"] for w in state["workers"]["worker"]["workers"].values()}
    seen: set[int] = set()
    for _ in range(200):
        with urllib.request.urlopen(f"http://{addr}/pid", timeout=5) as resp:
            seen.add(int(resp.read()))
        if seen == pids:
            break
    assert seen and seen <= pids
    kernel.signal(signal.SIGINT)
    assert kernel.wait(timeout=10) == 0


def test_a_bad_worker_count_is_one_clear_error_naming_key_and_source(cwd):
    for value, why in (("-1", "out of range"), ("2.5", "not an integer")):
        done = subprocess.run([PY, "-m", "ron_kernel", "run", "--workers", value], cwd=cwd,
                              env=_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert f"workers.count = '{value}' (from cli:--workers): {why}" in done.stderr


def test_config_check_lists_the_worker_keys_with_their_sources(cwd):
    env = _env(RONK_WORKERS_HEARTBEAT_TIMEOUT="2s")
    done = subprocess.run([PY, "-m", "ron_kernel", "config", "check", "--workers", "4",
                           "--workers-min-ready", "3"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert rows["workers.count"].split()[1] == "4" and "# cli:--workers" in rows["workers.count"]
    assert "# env:RONK_WORKERS_HEARTBEAT_TIMEOUT" in rows["workers.heartbeat_timeout"]
    assert "# cli:--workers-min-ready" in rows["workers.min_ready"]


def test_the_example_blob_store_serves_one_port_from_two_workers(cwd, procs):
    env = _env(PYTHONPATH=str(TESTS.parent))
    data = cwd / "blobs"
    kernel = Proc(cwd, ["run", "--app", "examples.blobstore:build", "--workers", "2",
                        "--set", f"app.data_dir={data}", "--set", "app.listen=127.0.0.1:0",
                        *OBS], env=env)
    procs.append(kernel)
    base = kernel.base_url()
    kernel.wait_until("both workers ready", lambda: _json(base + "/status")["workers"]
                      ["worker"]["ready"] == 2, timeout=60)
    state = _json(base + "/status")
    addr = state["listen"]["blobstore-http"]
    body = b"one port, two workers"
    put = urllib.request.Request(f"http://{addr}/o", data=body, method="PUT")
    with urllib.request.urlopen(put, timeout=10) as resp:
        assert resp.status == 201
        blob = json.loads(resp.read())["id"]

    def gets_by_worker() -> dict[str, float]:
        text = _http(base + "/metrics")[1].decode()
        return {w: _metric(text, "blobstore_request_seconds_count", op="get", code="200",
                           worker=w) or 0.0 for w in ("0", "1")}

    for _ in range(200):  # fresh connections: the kernel spreads them over both workers
        with urllib.request.urlopen(f"http://{addr}/o/{blob}", timeout=10) as resp:
            assert resp.read() == body  # any worker serves any id: the blobs are files
        if all(gets_by_worker().values()):
            break
    assert all(gets_by_worker().values()), gets_by_worker()
    kernel.signal(signal.SIGTERM)
    assert kernel.wait(timeout=15) == 0
