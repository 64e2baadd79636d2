"""Fault class: kernels that do not own the process's signals.

Before: ``Kernel.start()`` outside the main thread failed half-way (its state already changed)
and ``Kernel.run()`` raised there; with two kernels in one process the second one's SIGHUP
handler replaced the first one's, and when the second stopped nobody reloaded on SIGHUP.

Rule: a kernel outside the main thread works: it installs no signal handler (only the main
thread may), says so in one log line (``signal_handling_off``), reloads through its watcher or
``reload()`` and stops on ``request_shutdown()``/``shutdown()``; the process's handlers are
left alone. Kernels on the main thread's loop share SIGHUP: one signal reloads every one of
them, each keeps reloading while the others stop, and when the last one stops the handler
that was there before is back. Tried: a kernel in a thread with its own loop (asyncio and
uvloop), in process; two kernels on one loop in a real process, with real SIGHUPs.
"""

from __future__ import annotations

import asyncio
import io
import signal
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from _faults_support import PY, Kernel, started

from ron_kernel import Config, _logging
from ron_kernel.kernel import Kernel as RonKernel
from ron_kernel.logging import configure_logging

TWO_KERNELS = textwrap.dedent("""
    import asyncio, signal, sys
    from pathlib import Path
    from ron_kernel.kernel import Kernel

    seen = []
    previous = lambda signum, frame: seen.append(signum)
    signal.signal(signal.SIGHUP, previous)

    async def until(cond):
        for _ in range(1000):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise SystemExit("timed out")

    async def main():
        a = Kernel(path="a.toml", env={}, watch_config=False)
        b = Kernel(path="b.toml", env={}, watch_config=False)
        await a.start()
        await b.start()
        print("both up", flush=True)
        await until(lambda: a.config.version == 2 and b.config.version == 2)
        print("both reloaded", a.config.bus.capacity, b.config.bus.capacity, flush=True)
        await a.shutdown()
        print("a stopped", flush=True)
        await until(lambda: b.config.version == 3)
        print("b reloaded alone", b.config.bus.capacity, flush=True)
        await b.shutdown()
        print("previous back", signal.getsignal(signal.SIGHUP) is previous, flush=True)
        await until(lambda: seen)
        print("previous ran", flush=True)

    asyncio.run(main())
""")


def test_two_kernels_in_one_process_both_reload_on_one_sighup(tmp_path: Path):
    (tmp_path / "a.toml").write_text("[bus]\ncapacity = 64\n")
    (tmp_path / "b.toml").write_text("[bus]\ncapacity = 128\n")
    with started() as procs:
        k = Kernel(tmp_path, [], exe=[PY, "-c", TWO_KERNELS])
        procs.append(k)
        k.wait_for("both up", lambda: "both up" in k.out)
        (tmp_path / "a.toml").write_text("[bus]\ncapacity = 65\n")
        (tmp_path / "b.toml").write_text("[bus]\ncapacity = 129\n")
        k.signal(signal.SIGHUP)
        k.wait_for("both reloaded", lambda: "both reloaded" in k.out)
        assert "both reloaded 65 129" in k.out
        k.wait_for("a stopped", lambda: "a stopped" in k.out)
        (tmp_path / "b.toml").write_text("[bus]\ncapacity = 130\n")
        k.signal(signal.SIGHUP)
        k.wait_for("b alone", lambda: "b reloaded alone 130" in k.out)
        k.wait_for("previous back", lambda: "previous back" in k.out)
        assert "previous back True" in k.out
        k.signal(signal.SIGHUP)
        assert k.wait(15) == 0, k.err[-3000:]
        assert "previous ran" in k.out


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_kernel_in_a_thread_works_without_signals(tmp_path: Path, loop: str):
    config_file = tmp_path / "k.toml"
    config_file.write_text("[bus]\ncapacity = 64\n")
    out = io.StringIO()
    configure_logging(stream=out)
    main_handlers = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGINT,
                                                      signal.SIGTERM)}
    up = threading.Event()
    where: dict[str, Any] = {}

    def in_thread() -> str:
        async def main() -> str:
            k = RonKernel(Config.load(config_file, env={}), path=config_file, env={},
                          watch_config=False)
            where.update(kernel=k, loop=asyncio.get_running_loop())
            await k.start()
            assert k.state == "running"
            config_file.write_text("[bus]\ncapacity = 65\n")
            assert k.config_cell.reload() is True  # reloads without SIGHUP
            up.set()
            await k.run()  # returns on request_shutdown, no Ctrl-C involved
            return k.state

        if loop == "uvloop":
            import uvloop

            return uvloop.run(main())
        return asyncio.run(main())

    try:
        runner = asyncio.ensure_future(asyncio.to_thread(in_thread))
        assert await asyncio.to_thread(up.wait, 15)
        k: RonKernel = where["kernel"]
        assert k.config.version == 2 and k.config.bus.capacity == 65
        assert {s: signal.getsignal(s) for s in main_handlers} == main_handlers
        where["loop"].call_soon_threadsafe(k.request_shutdown, "test")
        assert await asyncio.wait_for(runner, 15) == "stopped"
    finally:
        _logging.reset_logging()
    lines = [line for line in out.getvalue().splitlines() if "signal_handling_off" in line]
    assert len(lines) == 1 and "not the main thread" in lines[0], out.getvalue()
