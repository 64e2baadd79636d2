"""GET /debug/tasks (off by default, loopback only) and ``ron-kernel tasks``.

Real HTTP on 127.0.0.1 with a port the OS picks; every async test runs on both loops.
"""

from __future__ import annotations

import asyncio
import io
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from ron_kernel import Bus, Config, _logging
from ron_kernel._kernel_http import debug_tasks_handler, is_loopback
from ron_kernel._loop_health import dump_tasks, task_child
from ron_kernel.cli import main
from ron_kernel.cli.tasks import format_table, tasks, tasks_url
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ChildContext


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RON_CONFIG", raising=False)
    saved = {name: getattr(_logging._settings, name) for name in _logging._Settings.__slots__}
    processors = list(_logging._processors)
    yield
    for name, value in saved.items():
        setattr(_logging._settings, name, value)
    _logging._processors[:] = processors


def _kernel(debug: bool = True) -> Kernel:
    config = Config.from_mapping({"observability": {
        "expose_http": True, "addr": "127.0.0.1:0", "debug_endpoints": debug}})
    return Kernel(config, env={}, watch_config=False, handle_sighup=False)


class _Parked:
    """A child that subscribes to a quiet bus of its own and parks in ``rx.recv()``."""

    def __init__(self) -> None:
        self.line = 0
        self.parked = asyncio.Event()
        self.bus: Bus[int] = Bus(8)

    async def __call__(self, ctx: ChildContext) -> None:
        with self.bus.subscribe() as rx:
            ctx.ready()
            self.parked.set()
            self.line = sys._getframe().f_lineno + 1
            await rx.recv()  # parked here until the test publishes
            await ctx.shutdown.wait()

    def release(self) -> None:
        """Let the child go on to wait for shutdown (so the kernel stops without a deadline)."""
        self.bus.publish(1)

    @property
    def frame(self) -> str:
        code = type(self).__call__.__code__
        return f"{code.co_filename}:{self.line} {code.co_qualname}"


# ----------------------------------------------------------------------------- the endpoint


async def test_a_child_parked_in_recv_is_in_the_dump_with_its_frame():
    parked = _Parked()
    async with _kernel() as k, aiohttp.ClientSession() as http:
        k.supervise("parked", parked)
        await asyncio.wait_for(parked.parked.wait(), 5)
        await asyncio.sleep(0)  # let it reach the await
        async with http.get(k.urls()["base"] + "/debug/tasks") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
            dump = await resp.json()
        parked.release()
    assert all(set(t) == {"name", "child", "coro", "state", "stack"} for t in dump)
    [task] = [t for t in dump if t["child"] == "parked"]
    assert task["name"] == "root/parked" and task["state"] == "pending"
    assert task["coro"] == "Supervisor._run"
    stack = task["stack"]
    assert parked.frame in stack
    # innermost first: the bus's recv sits right inside the child's frame
    assert stack[stack.index(parked.frame) - 1].endswith(" Receiver.recv")
    assert stack[-1].endswith(" Supervisor._run")
    # the request being served shows up as the running task, owned by no child
    running = [t for t in dump if t["state"] == "running"]
    assert len(running) == 1 and running[0]["child"] is None
    assert dump.index(task) < dump.index(running[0])  # supervised children first


async def test_the_endpoint_is_off_unless_debug_endpoints_is_true():
    async with _kernel(debug=False) as k, aiohttp.ClientSession() as http:
        async with http.get(k.urls()["base"] + "/debug/tasks") as resp:
            assert resp.status == 404
        err = io.StringIO()
        status = await asyncio.to_thread(tasks, k.urls()["base"], out=io.StringIO(), err=err)
    assert status == 1 and "404" in err.getvalue() and "debug_endpoints" in err.getvalue()


async def test_a_peer_that_is_not_loopback_is_refused_with_403():
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("192.0.2.7", 40000) if name == "peername" else default)
    request = make_mocked_request("GET", "/debug/tasks", transport=transport)
    assert request.remote == "192.0.2.7"
    resp = await debug_tasks_handler()(request)
    assert resp.status == 403
    assert b"loopback" in resp.body  # type: ignore[operator]


@pytest.mark.parametrize(("remote", "ok"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("2001:db8::1", False), (None, False),
    ("", False), ("not-an-ip", False),
])
def test_is_loopback(remote, ok):
    assert is_loopback(remote) is ok


@pytest.mark.parametrize(("name", "child"), [
    ("root/svc", "svc"), ("root/svc:restart", "svc"), ("cache/w1", "w1"),
    ("Task-3", None), ("root/", None), ("/x", None), ("ron-kernel-config-watch", None),
])
def test_task_child_comes_from_the_supervisor_task_name(name, child):
    assert task_child(name) == child


async def test_dump_tasks_describes_every_task_of_the_loop():
    gate = asyncio.Event()

    async def waiter() -> None:
        await gate.wait()

    task = asyncio.create_task(waiter(), name="sup/worker")
    await asyncio.sleep(0)
    task.cancel()  # cancellation requested, not yet delivered
    dump = {t["name"]: t for t in dump_tasks()}
    await asyncio.gather(task, return_exceptions=True)
    entry = dump["sup/worker"]
    assert entry["child"] == "worker" and entry["state"] == "cancelling"
    assert entry["coro"].endswith("waiter")
    assert entry["stack"][0].endswith(" Event.wait") and entry["stack"][1].endswith("waiter")
    assert sum(1 for t in dump.values() if t["state"] == "running") == 1


# ----------------------------------------------------------------------------- the command


async def test_tasks_command_prints_a_table_with_the_parked_child():
    parked = _Parked()
    async with _kernel() as k:
        k.supervise("parked", parked)
        await asyncio.wait_for(parked.parked.wait(), 5)
        out, err = io.StringIO(), io.StringIO()
        status = await asyncio.to_thread(tasks, k.urls()["base"], out=out, err=err)
        deep = io.StringIO()
        deep_status = await asyncio.to_thread(tasks, k.urls()["base"] + "/debug/tasks/",
                                              out=deep, err=err, stacks=True)
        parked.release()
    assert (status, deep_status, err.getvalue()) == (0, 0, "")
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "CHILD", "STATE", "CORO", "WHERE"]
    [row] = [line for line in lines if line.startswith("root/parked ")]
    assert row.split()[:4] == ["root/parked", "parked", "pending", "Supervisor._run"]
    assert "_bus.py:" in row  # WHERE: the innermost frame, file name only
    assert lines[-1].endswith("owned by supervised children")
    assert f"    {parked.frame}" in deep.getvalue().splitlines()


@pytest.mark.parametrize("url", [
    "ftp://127.0.0.1:9909", "127.0.0.1:9909", "http://", "http://127.0.0.1:99999",
    "http://127.0.0.1:9909/?x=1", "",
])
def test_tasks_command_refuses_a_malformed_url_with_status_2(url):
    err = io.StringIO()
    assert tasks(url, out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("tasks: ")


def test_tasks_command_says_when_the_kernel_is_unreachable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, err = io.StringIO(), io.StringIO()
    assert tasks(f"http://127.0.0.1:{port}", out=out, err=err, timeout=2) == 1
    assert out.getvalue() == "" and "cannot reach" in err.getvalue()


def test_tasks_url_appends_the_path_once():
    assert tasks_url("http://127.0.0.1:9909") == "http://127.0.0.1:9909/debug/tasks"
    assert tasks_url("http://[::1]:9909/") == "http://[::1]:9909/debug/tasks"
    assert tasks_url("http://h:1/debug/tasks") == "http://h:1/debug/tasks"
    assert tasks_url("https://h/prefix") == "https://h/prefix/debug/tasks"


def test_format_table_cuts_long_cells_and_tolerates_missing_fields():
    rows: list[dict[str, Any]] = [{"name": "x" * 100, "stack": []}, {"name": "y"}]
    lines = format_table(rows, stacks=True)
    assert lines[1].startswith("x" * 57 + "...")
    assert lines[2].split() == ["y", "-", "-", "-", "-"]


def test_the_command_line_reaches_the_tasks_command(capsys):
    assert main(["tasks", "--url", "gopher://nowhere"]) == 2
    assert "not an http" in capsys.readouterr().err
