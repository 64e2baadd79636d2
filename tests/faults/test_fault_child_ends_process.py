"""Fault class: a child tries to end the process.

Rule: ``SystemExit`` and ``KeyboardInterrupt`` raised in a supervised child are a crash of that
child (reason ``panic: SystemExit: exit status 3``), never an exit of the process: the loop,
the siblings and the kernel keep running, and the child is restarted by its policy. Tried: in
process, and in a real process with real signals afterwards (exit 0 after a clean drain).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from _faults_support import until

from ron_kernel.supervisor import ChildContext, Supervisor


@pytest.mark.parametrize(("exc", "reason"), [
    (SystemExit(3), "panic: SystemExit: exit status 3"),
    (KeyboardInterrupt(), "panic: KeyboardInterrupt"),
])
async def test_system_exit_and_keyboard_interrupt_are_crashes_of_the_child(exc, reason):
    runs = {"n": 0}

    async def child(ctx: ChildContext) -> None:
        runs["n"] += 1
        if runs["n"] == 1:
            raise exc
        await ctx.shutdown.wait()

    sup = Supervisor(min_backoff=0, max_backoff=0.001)
    sup.add("leaver", child)
    async with sup:
        await until(lambda: sup.snapshot()["leaver"]["restarts"] == 1)
        assert sup.snapshot()["leaver"]["last_reason"] == reason
        await asyncio.sleep(0.01)  # the loop is alive and well
        assert sup.snapshot()["leaver"]["state"] == "running"


async def test_fatal_can_name_system_exit_to_quarantine_at_once():
    async def child(ctx: ChildContext) -> None:
        raise SystemExit(1)

    sup = Supervisor(min_backoff=0)
    sup.add("leaver", child, fatal=SystemExit)
    async with sup:
        await until(lambda: sup.snapshot()["leaver"]["state"] == "quarantined")
        info = sup.snapshot()["leaver"]
        assert info["restarts"] == 0  # at once: no restart before the quarantine
        assert info["last_reason"] == "panic: SystemExit: exit status 1"


SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from ron_kernel.kernel import Kernel

    async def leaver(ctx):
        raise SystemExit(3)

    async def main():
        async with Kernel(env={}, argv=["--sup-restart-cap", "2", "--sup-min-backoff", "0s"],
                          watch_config=False) as k:
            k.supervise("leaver", leaver)
            print("up", flush=True)
            await k.run()
    asyncio.run(main())
    print("drained", flush=True)
""")


def test_a_real_process_survives_a_child_system_exit_and_drains_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "up"
        # let the child crash into quarantine: the process must still be there
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "drained" in out
    assert '"event":"service_quarantined"' in err and "SystemExit" in err
