"""Fault class: paths whose bytes are not UTF-8.

Tried: a working directory whose name holds the byte ``\\xff`` (Python decodes it as the lone
surrogate ``\\udcff``, which UTF-8 cannot encode): loading, explaining, an invalid file's
error, a reload and the file watcher there (``config check`` and ``run`` ended in a traceback).

Rule: the config layer shows every path with ``_text.show_path`` (``os.fsdecode`` bytes, the
undecodable ones as U+FFFD) -- sources (``file:<path>``), errors, log lines, ``explain`` rows and
``ConfigCell.status()`` -- while files are still opened by their real name. The watcher polls
such a directory (watchfiles takes UTF-8 paths only) and its state says ``polling``.

The command line too (issue 11, the CLI part): ``config check`` and ``run`` in such a directory,
as real processes, with an ``--app`` module living there (a config model whose default is the
directory, a factory failing with the path in its message, a syntax error), an invalid config
file there, and stdout that can only take ASCII (``PYTHONIOENCODING=ascii``): normal output and
exit statuses, never a traceback. Everything the command prints goes through ``cli.process.say``
(escapes what the stream cannot encode), paths in its messages through ``show_path``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from _faults_support import PY, Kernel, in_parallel, kernel_env, started

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


# ----------------------------------------------------------------------------- the command line

PLACE_APP = textwrap.dedent("""
    import dataclasses, os

    @dataclasses.dataclass
    class Settings:
        where: str = os.getcwd()

    APP_CONFIG = Settings

    async def svc(ctx):
        ctx.ready()
        print("ready in", repr(ctx.config.app.where), flush=True)
        await ctx.shutdown.wait()

    def build(kernel):
        kernel.supervise("svc", svc)

    def broken(kernel):
        raise RuntimeError("nothing to serve in " + os.getcwd())
""")


def test_config_check_and_run_there_end_normally(odd_cwd: Path):
    (odd_cwd / "place_app.py").write_text(PLACE_APP)
    (odd_cwd / "syntax_app.py").write_text("def build(kernel):\n    return (\n")
    (odd_cwd / "bad.toml").write_text("[bus]\ncapacity = 0\n")
    cases = [  # args, extra env, status, needle in stdout+stderr
        (["config", "check"], {}, 0, "config check: ok"),
        (["config", "check", "--app", "place_app:build"], {"PYTHONIOENCODING": "ascii"}, 0,
         "app.where"),
        (["config", "check", "--config", "bad.toml"], {}, 1, "cfg-\ufffd-dir"),
        (["run", "--app", "place_app:broken"], {}, 1, "nothing to serve in"),
        (["run", "--app", "syntax_app:build"], {}, 1, "cfg-\ufffd-dir"),
    ]

    def one(case: tuple[list[str], dict[str, str], int, str]) -> None:
        args, extra, status, needle = case
        done = subprocess.run([PY, "-m", "ron_kernel", *args], cwd=odd_cwd,
                              env=kernel_env(**extra), capture_output=True, timeout=30)
        text = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert done.returncode == status, (args, done.returncode, text[-3000:])
        assert "Traceback" not in text and needle in text, (args, needle, text[-3000:])

    in_parallel(one, cases)
    with started() as procs:
        k = Kernel(odd_cwd, ["run", "--app", "place_app:build"])
        procs.append(k)
        k.wait_for("the app", lambda: "ready in" in k.out)
        k.signal(signal.SIGINT)
        assert k.wait(15) == 0, k.err[-3000:]
        assert "Traceback" not in k.err
