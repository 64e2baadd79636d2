"""Fault class: paths whose bytes are not UTF-8.

Tried: a working directory whose name holds the byte ``\\xff`` (Python decodes it as the lone
surrogate ``\\udcff``, which UTF-8 cannot encode): loading, explaining, an invalid file's
error, a reload and the file watcher there (``config check`` and ``run`` ended in a traceback).

Rule: the config layer shows every path with ``_text.show_path`` (``os.fsdecode`` bytes, the
undecodable ones as U+FFFD) -- sources (``file:<path>``), errors, log lines, ``explain`` rows and
``ConfigCell.status()`` -- while files are still opened by their real name. The watcher polls
such a directory (watchfiles takes UTF-8 paths only) and its state says ``polling``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ron_kernel import Bus, Config, KernelEvent
from ron_kernel.config import ConfigCell, explain
from ron_kernel.errors import ConfigError


@pytest.fixture
def odd_cwd(tmp_path, monkeypatch) -> Path:
    """A working directory named with the byte 0xff, entered."""
    raw = os.path.join(os.fsencode(tmp_path), b"cfg-\xff-dir")
    os.mkdir(raw)
    monkeypatch.chdir(raw)
    cwd = Path.cwd()
    assert "\udcff" in str(cwd)  # the name really is undecodable
    return cwd


def encodes(text: str) -> bool:
    text.encode("utf-8")  # raises UnicodeEncodeError otherwise
    return True


def test_load_and_explain_work_and_show_the_path_encodably(odd_cwd):
    (odd_cwd / "Config.toml").write_text("[bus]\ncapacity = 8\n")
    assert Config.load(env={}).bus.capacity == 8
    rows = explain(env={})
    source = dict((r.key, r.source) for r in rows)["bus.capacity"]
    assert source.startswith("file:") and "cfg-\ufffd-dir" in source
    assert all(encodes(f"{r.key} {r.value} {r.source}") for r in rows)


def test_errors_name_the_file_encodably(odd_cwd):
    (odd_cwd / "Config.toml").write_text("[bus]\ncapacity = 0\n")
    with pytest.raises(ConfigError) as info:
        Config.load(env={})
    message = str(info.value)
    assert encodes(message) and "cfg-\ufffd-dir" in message and "bus.capacity" in message
    with pytest.raises(ConfigError) as missing:
        Config.load("absent.toml", env={})
    assert encodes(str(missing.value)) and "file not found" in str(missing.value)


def test_defaults_log_line_is_utf8(odd_cwd, capsys):
    assert Config.load(env={}) == Config()  # no Config.toml here: defaults, logged with the path
    err = capsys.readouterr().err
    assert "config_defaults_applied" in err and encodes(err) and "\ufffd" in err


async def test_a_cell_reloads_and_watches_there(odd_cwd, capsys):
    path = odd_cwd / "Config.toml"
    path.write_text("[bus]\ncapacity = 8\n")
    bus: Bus = Bus(16)
    rx = bus.subscribe()
    cell = ConfigCell(Config.load(env={}), env={}, bus=bus)
    assert encodes(cell.status().path) and "\ufffd" in cell.status().path
    path.write_text("[bus]\ncapacity = 0\n")
    assert cell.reload() is False
    assert encodes(str(cell.last_error)) and "\ufffd" in str(cell.last_error)
    record = cell.last_reload
    assert record is not None and all(encodes(p) for p in record.problems)
    task = cell.start_watching(poll_interval=0.02)
    try:
        await asyncio.sleep(0.2)
        tmp = odd_cwd / "Config.toml.tmp"
        tmp.write_text("[bus]\ncapacity = 16\n")
        os.replace(tmp, path)
        assert await asyncio.wait_for(rx.recv(), 5) == KernelEvent.ConfigUpdated(version=2)
        # watchfiles takes UTF-8 paths only: such a directory is polled, and says so
        assert cell.watcher_state == "polling"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert encodes(capsys.readouterr().err)
