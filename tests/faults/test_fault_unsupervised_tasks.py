"""Fault class: what the kernel does not supervise holds the process after the drain.

Before: a child spawned a task that swallows its cancellation, then crashed; after Ctrl-C the
log said ``shutdown_complete`` and the process never exited (``asyncio.Runner`` cancels every
remaining task and waits for each to finish).

Rule: after the drain deadline plus a grace the process exits, whatever else remains. Tasks
left after the drain are cancelled and get ``LEFTOVER_GRACE`` (1 s); those still running are
logged by name (``tasks_left_behind``), counted (``tasks_aborted_total{kind="left_behind"}``)
and left behind: the process ends with ``os._exit`` and the status the drain earned (0).
Anything else that holds the exit (a default-executor thread still sleeping, a non-daemon
thread, a slow ``atexit``) gets ``LEAVING_GRACE`` (2 s), then the process leaves with its status
(``exit_stalled`` names the threads). Tried: real ``ron-kernel run`` processes with such
apps, on asyncio and uvloop.
"""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path

from _faults_support import Kernel, events, in_parallel, started

from ron_kernel.cli.process import LEAVING_GRACE
from ron_kernel.cli.run import LEFTOVER_GRACE

STUBBORN_APP = textwrap.dedent("""
    import asyncio

    async def _hold():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass                     # swallowed: this task never ends

    async def spawner(ctx):
        ctx.ready()
        asyncio.get_running_loop().create_task(_hold(), name="stubborn-helper")
        await asyncio.sleep(0.1)
        raise RuntimeError("crash after spawning")

    def build(kernel):
        kernel.supervise("spawner", spawner, restart="temporary")
""")

THREADS_APP = textwrap.dedent("""
    import asyncio, threading, time

    async def worker(ctx):
        ctx.ready()
        threading.Thread(target=time.sleep, args=(60,), name="app-sleeper").start()
        await asyncio.to_thread(time.sleep, 60)   # cancelled at the drain; the thread sleeps on

    def build(kernel):
        kernel.supervise("worker", worker)
""")

DRAIN = 1.0


def test_what_is_left_after_the_drain_does_not_hold_the_process(tmp_path: Path):
    (tmp_path / "stubborn_app.py").write_text(STUBBORN_APP)
    (tmp_path / "threads_app.py").write_text(THREADS_APP)
    cases = [("stubborn_app", "asyncio"), ("stubborn_app", "uvloop"), ("threads_app", "uvloop")]

    def one(case: tuple[str, str]) -> tuple[str, float, list[dict[str, object]]]:
        app, loop = case
        with started() as procs:
            k = Kernel(tmp_path, ["run", "--app", f"{app}:build", "--loop", loop,
                                  "--drain-deadline", f"{DRAIN}s"], name=f"{app}-{loop}")
            procs.append(k)
            k.wait_for("running", lambda: "running;" in k.out)
            time.sleep(0.5)  # the stubborn helper exists, its spawner crashed
            t0 = time.monotonic()
            k.signal(signal.SIGINT)
            # deadline + 100 ms abandon grace + LEFTOVER_GRACE + LEAVING_GRACE, generously
            code = k.wait(DRAIN + LEFTOVER_GRACE + LEAVING_GRACE + 10)
            took = time.monotonic() - t0
            assert code == 0, k.err[-3000:]
            return f"{app} on {loop}", took, events(k.err)

    for name, took, log in in_parallel(one, cases):
        print(f"\n{name}: exit 0 {took:.2f}s after SIGINT")
        names = [e["event"] for e in log]
        assert "shutdown_complete" in names, names
        if name.startswith("stubborn_app"):
            left = [e for e in log if e["event"] == "tasks_left_behind"]
            assert len(left) == 1 and left[0]["tasks"] == ["stubborn-helper"], left
            assert left[0]["count"] == 1
        else:
            stalled = [e for e in log if e["event"] == "exit_stalled"]
            assert len(stalled) == 1 and "app-sleeper" in stalled[0]["threads"], stalled  # type: ignore[operator]


async def test_left_behind_tasks_are_counted_and_named():
    import asyncio

    from ron_kernel._counters import KernelCounters
    from ron_kernel.cli.run import _leave_the_rest

    release = asyncio.Event()

    async def hold() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass  # swallowed until the test releases it

    async def polite() -> None:
        await asyncio.sleep(3600)

    stubborn = asyncio.get_running_loop().create_task(hold(), name="stubborn")
    fine = asyncio.get_running_loop().create_task(polite(), name="polite")
    await asyncio.sleep(0)
    counters = KernelCounters()
    await _leave_the_rest(0, counters, owns_process=False)  # in process: log and count only
    assert fine.cancelled()
    assert not stubborn.done()
    assert counters.tasks_aborted_total.get("left_behind") == 1
    release.set()
    stubborn.cancel()
    await asyncio.wait_for(stubborn, 5)
