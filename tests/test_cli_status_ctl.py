"""``ron-kernel status`` and ``ron-kernel ctl`` against a real kernel on loopback.

The commands are synchronous (urllib): in-process they run in a worker thread while the kernel
serves on the test's loop. One end-to-end test drives ``status --watch`` as a real process and
stops it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ron_kernel.cli import main
from ron_kernel.cli.ctl import control_url, ctl_command
from ron_kernel.cli.status import (
    base_url,
    render_plain,
    rich_available,
    rows,
    status_command,
)
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ChildContext, Supervisor

TOKEN = "cli-control-token-0123456789abcdef"
ARGV = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0", "--sup-restart-cap", "1",
        "--sup-min-backoff", "0s", "--sup-max-backoff", "1ms"]
EVIL = "boom \x1b[2J\x1b[31mred\x07 <b>"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield


async def _steady(ctx: ChildContext) -> None:
    ctx.ready()
    await ctx.shutdown.wait()


async def _crash(ctx: ChildContext) -> None:
    raise RuntimeError(EVIL)


@asynccontextmanager
async def kernel(token: str | None = TOKEN) -> AsyncIterator[tuple[Kernel, str]]:
    env = {"RONK_CONTROL_TOKEN": token} if token else {}
    k = Kernel(env=env, argv=ARGV, watch_config=False, handle_sighup=False)
    k.supervise("web", _steady)
    k.supervise("flaky", _crash)
    nested = Supervisor(name="jobs")
    nested.add("leaf", _steady)
    k.supervise("jobs", nested)
    async with k:
        deadline = time.monotonic() + 10
        while k.supervisor.snapshot()["flaky"]["state"] != "quarantined":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        yield k, k.urls()["base"]


async def _status(url: str, **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(status_command, url, out=out, err=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


async def _ctl(action: str, name: str | None, url: str, env: dict[str, str] | None = None,
               **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"RONK_CONTROL_TOKEN": TOKEN} if env is None else env
    code = await asyncio.to_thread(ctl_command, action, name, url, env=env, out=out,
                                   err=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- status


@pytest.mark.parametrize("fancy", [False, True], ids=["plain", "rich"])
async def test_status_prints_every_child_with_state_restarts_readiness_and_reason(fancy):
    assert rich_available()  # the dev extra brings rich; the plain path is forced here
    async with kernel() as (_, base):
        code, out, err = await _status(base, use_rich=fancy)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("kernel running") and "config v1" in lines[0]
    assert "ready: no (missing: quarantined:flaky)" in lines[0]
    assert lines[1].startswith("loop ") and "blocks 0" in lines[1]
    assert lines[2].startswith("bus  ") and "published" in lines[2]
    header = next(line for line in lines if line.startswith("CHILD"))
    assert header.split() == ["CHILD", "STATE", "RESTARTS", "READY", "LAST", "REASON"]
    table = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1:] if line}
    assert table["web"][:4] == ["web", "running", "0", "yes"]
    assert table["flaky"][:4] == ["flaky", "quarantined", "1", "-"]
    assert table["jobs"][:2] == ["jobs", "running"]
    # the crash reason is shown with its control characters escaped, nothing raw
    assert "\\x1b[2J\\x1b[31mred\\x07 <b>" in out
    assert "\x1b" not in out and "\x07" not in out


def test_rows_indent_nested_children_and_cut_long_reasons():
    status = {"readiness": {"services": {"a": True, "b": False}},
              "supervisor": {"a": {"state": "running", "restarts": 0, "last_reason": None,
                                   "children": {"b": {"state": "backing_off", "restarts": 2,
                                                      "last_reason": "x" * 500}}}}}
    assert rows(status) == [("a", "running", "0", "yes", ""),
                            ("  b", "backing_off", "2", "no", "x" * 59 + "…")]
    text = render_plain(status)
    assert "  b    backing_off  2         no" in text


async def test_status_watch_refreshes_until_ctrl_c_and_exits_0():
    frames: list[int] = []

    def sleep(_: float) -> None:
        frames.append(1)
        if len(frames) == 3:
            raise KeyboardInterrupt

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    async with kernel() as (_, base):
        for fancy in (False, True):
            frames.clear()
            out = Tty()
            code = await asyncio.to_thread(status_command, base, watch=True, use_rich=fancy,
                                           sleep=sleep, out=out, err=io.StringIO())
            assert code == 0 and len(frames) == 3
            assert out.getvalue().count("CHILD") >= 3
            assert "\\x1b[31mred" in out.getvalue()  # escaped reason, in both renderers
        frames.clear()  # into a pipe: one appended, time-stamped frame per refresh
        code, text, _ = await _status(base, watch=True, use_rich=True, sleep=sleep)
        assert code == 0 and text.count("CHILD") == 3 and text.count(base) == 3


async def test_status_watch_keeps_trying_while_the_kernel_is_away():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    seen: list[int] = []

    def sleep(_: float) -> None:
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt

    code, out, _ = await _status(f"http://127.0.0.1:{port}", watch=True, use_rich=False,
                                 sleep=sleep)
    assert code == 0 and out.count("cannot reach") == 2


@pytest.mark.parametrize("url", ["ftp://host", "127.0.0.1:9909", "http://", "http://h:99999",
                                 "http://h:1/?x=1"])
async def test_status_and_ctl_refuse_a_bad_url_with_exit_2(url):
    code, _, err = await _status(url)
    assert code == 2 and "--url" in err
    code, _, err = await _ctl("reload", None, url)
    assert code == 2 and "--url" in err


async def test_status_of_an_unreachable_or_foreign_server_exits_1():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = await _status(f"http://127.0.0.1:{port}")
    assert code == 1 and "cannot reach" in err
    async with kernel() as (_, base):
        code, _, err = await _status(base + "/metrics")  # answers 404 for /metrics/status
        assert code == 1 and "404" in err


def test_base_url_keeps_a_path_prefix_and_drops_a_trailing_slash():
    assert base_url("http://127.0.0.1:9909/") == "http://127.0.0.1:9909"
    assert base_url("https://ops.example/kernel/") == "https://ops.example/kernel"


# ----------------------------------------------------------------------------- ctl


async def test_ctl_release_restart_and_reload_exit_0():
    async with kernel() as (k, base):
        code, out, err = await _ctl("release", "flaky", base)
        assert (code, err) == (0, "") and out.startswith("release flaky: ok")
        code, out, _ = await _ctl("restart", "web", base)
        assert code == 0 and out == "restart web: ok (state running)\n"
        code, out, _ = await _ctl("restart", "jobs/leaf", base)
        assert code == 0 and out.startswith("restart jobs/leaf: ok")
        code, out, _ = await _ctl("reload", None, base)
        assert code == 0 and out == "reload: unchanged (config version 1)\n"
        assert k.metrics.counters.control_requests_total.get("restart", "ok") == 2


async def test_ctl_refusals_exit_1_with_the_servers_reason():
    async with kernel() as (_, base):
        code, _, err = await _ctl("release", "web", base)
        assert code == 1 and "refused (HTTP 409): child 'web' is not quarantined" in err
        code, _, err = await _ctl("restart", "nope", base)
        assert code == 1 and "(HTTP 404)" in err
        assert "known: web, flaky, jobs, jobs/leaf" in err
        code, _, err = await _ctl("reload", None, base, env={"RONK_CONTROL_TOKEN": "x" * 20})
        assert code == 1 and "(HTTP 401)" in err and "x" * 20 not in err
    async with kernel(token=None) as (_, base):
        code, _, err = await _ctl("reload", None, base)
        assert code == 1 and "observability.control_token is not set" in err


async def test_ctl_without_a_token_is_a_usage_error_and_token_env_names_another_variable():
    code, _, err = await _ctl("reload", None, "http://127.0.0.1:9", env={})
    assert code == 2 and "set RONK_CONTROL_TOKEN" in err
    async with kernel() as (_, base):
        code, _, err = await _ctl("reload", None, base, env={"MY_TOKEN": TOKEN},
                                  token_env="MY_TOKEN")
        assert code == 0


async def test_ctl_against_nothing_exits_1():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = await _ctl("reload", None, f"http://127.0.0.1:{port}")
    assert code == 1 and "cannot reach" in err


def test_control_url_encodes_the_name_and_keeps_the_nesting_slash():
    assert control_url("http://h:1", "restart", "jobs/a b?") == \
        "http://h:1/control/restart/jobs/a%20b%3F"
    assert control_url("http://h:1", "reload", None) == "http://h:1/control/reload"


async def test_main_dispatches_status_and_ctl(monkeypatch, capsys):
    monkeypatch.setenv("RONK_CONTROL_TOKEN", TOKEN)
    async with kernel() as (_, base):
        assert await asyncio.to_thread(main, ["status", "--url", base]) == 0
        assert await asyncio.to_thread(main, ["ctl", "restart", "web", "--url", base]) == 0
        assert await asyncio.to_thread(main, ["ctl", "release", "web", "--url", base]) == 1
    out, err = capsys.readouterr()
    assert "CHILD" in out and "restart web: ok" in out and "not quarantined" in err
    assert TOKEN not in out + err
    with pytest.raises(SystemExit) as done:
        main(["ctl", "restart"])  # NAME is required
    assert done.value.code == 2


def test_status_watch_as_a_process_stops_on_ctrl_c_with_exit_0(tmp_path: Path):
    app = tmp_path / "watched_app.py"
    app.write_text("async def web(ctx):\n    ctx.ready()\n    await ctx.shutdown.wait()\n\n"
                   "def build(kernel):\n    kernel.supervise('web', web)\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    exe = [sys.executable, "-m", "ron_kernel"]
    server = subprocess.Popen([*exe, "run", "--app", "watched_app:build", "--obs-http", "true",
                               "--obs-addr", "127.0.0.1:0"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watcher = None
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        base = line.split("observability on ")[1].split()[0]
        watcher = subprocess.Popen([*exe, "status", "--url", base, "--watch"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.5)  # two or three refreshes
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=20)
        assert watcher.returncode == 0, err
        assert out.count("web") >= 2 and "Traceback" not in err
    finally:
        for proc in (watcher, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
