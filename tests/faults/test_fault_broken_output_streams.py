"""Fault class: an output stream whose reader went away decides the exit status.

Before: with stderr a pipe whose reader had exited, every ``print(..., file=sys.stderr)`` of
the command raised ``BrokenPipeError``: an interrupted start ended with status 1 (or died by
the signal) instead of 130, and the second-Ctrl-C handler raised before its ``os._exit``, so a
second Ctrl-C did nothing until the drain ended. Logging already never raised (dropped lines
are counted).

Rule: the exit status tells how the command ended, never that a stream broke. Everything the
command prints goes through ``cli.process.say`` (never raises); the second-signal exit writes
with ``os.write`` and leaves whatever happens; at the end of ``main`` a stdout/stderr whose
reader is gone is pointed at ``/dev/null`` so the interpreter's last flush cannot fail. Tried:
stderr (and stdout) pipes closed by their reader after start, then a clean Ctrl-C (JSON and
text logs), a Ctrl-C while the app's module is still importing, a second Ctrl-C during a slow
drain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

from _faults_support import PY, handled, in_parallel, kernel_env

APP = textwrap.dedent("""
    import asyncio, time
    from pathlib import Path

    time.sleep(float(Path("import_delay").read_text()))  # 0, or long enough to interrupt

    async def svc(ctx):
        ctx.ready()
        Path("ready.flag").touch()
        await ctx.shutdown.wait()
        Path("draining.flag").touch()
        await asyncio.sleep(float(Path("drain_time").read_text()))  # a slow drain, or none

    def build(kernel):
        kernel.supervise("svc", svc)
""")


def _until(cond, what: str, p: subprocess.Popen[bytes], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert p.poll() is None, f"exited {p.returncode} before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _case(root: Path, name: str, *, close: tuple[str, ...], when: str, fmt: str = "json"
          ) -> tuple[str, int, float]:
    cwd = root / name
    cwd.mkdir()
    (cwd / "app.py").write_text(APP)
    (cwd / "import_delay").write_text("5" if when == "starting" else "0")
    (cwd / "drain_time").write_text("30" if when == "draining" else "0")
    p = subprocess.Popen([PY, "-m", "ron_kernel", "run", "--app", "app:build", "--log-format",
                          fmt, "--drain-deadline", "30s"], cwd=cwd, env=kernel_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if when == "starting":
            # SIGHUP: only the process's own handlers take it (Python handles SIGINT from exec)
            _until(lambda: handled(p.pid, signal.SIGHUP), "the handlers", p)
            time.sleep(0.3)
        else:
            _until((cwd / "ready.flag").exists, "the app", p)
        for stream in close:  # the reader goes away
            getattr(p, stream).close()
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        if when == "draining":
            _until((cwd / "draining.flag").exists, "the drain", p)
            time.sleep(0.2)
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGINT)
        code = p.wait(timeout=20)
        return name, code, time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        for stream in (p.stdout, p.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def test_a_reader_going_away_does_not_change_the_exit_status(tmp_path: Path):
    cases = [  # name, streams closed, moment of the Ctrl-C, log format, expected status
        ("clean-json", ("stderr",), "running", "json", 0),
        ("clean-text", ("stderr",), "running", "text", 0),
        ("clean-both", ("stdout", "stderr"), "running", "json", 0),
        ("starting", ("stderr",), "starting", "json", 130),
        ("second-ctrl-c", ("stderr",), "draining", "json", 130),
    ]
    results = in_parallel(
        lambda c: (*_case(tmp_path, c[0], close=c[1], when=c[2], fmt=c[3]), c[4]), cases)
    for name, code, took, expected in results:
        print(f"\n{name}: exit {code} {took * 1e3:.0f} ms after the (last) Ctrl-C")
        assert code == expected, (name, code)
        if name == "second-ctrl-c":
            assert took < 4, "the second Ctrl-C must not wait for the drain (5 s at least)"
