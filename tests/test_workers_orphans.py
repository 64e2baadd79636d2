"""No orphans: when the parent is killed (SIGKILL), every worker exits by itself within 2 s.

The parent here is a real separate process (``PARENT`` below) running a kernel with two
workers; the test kills it and watches the worker pids. Two ways out are proved: Linux's
parent-death signal (``prctl(PR_SET_PDEATHSIG)``, the default), and the portable fallback
with it turned off (the channel's EOF drains the worker; a ``getppid()`` watch is the hard
backstop). A zombie (exited, not yet reaped by whoever adopted it) counts as exited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _procs import alive

TESTS = Path(__file__).resolve().parent

PARENT = r'''
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import ron_kernel._workers as workers
workers.USE_PDEATHSIG = sys.argv[2] == "pdeathsig"
from ron_kernel import Config
from ron_kernel.kernel import Kernel

async def main():
    kernel = Kernel(Config.load(argv=[], env={}), env={}, argv=[], watch_config=False,
                    handle_sighup=False)
    kernel.supervise_workers("w", app="workers_apps:ok", count=2)
    await kernel.start()
    while kernel.status()["workers"]["w"]["ready"] < 2:
        await asyncio.sleep(0.05)
    pids = [w["pid"] for w in kernel.status()["workers"]["w"]["workers"].values()]
    print(json.dumps(pids), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(("mode", "bound"), [("pdeathsig", 2.0), ("fallback", 2.0)])
def test_workers_exit_by_themselves_when_the_parent_is_killed(mode: str, bound: float,
                                                              tmp_path: Path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(TESTS), mode],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # the parent prints once both workers are ready
        pids = json.loads(line)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        parent.kill()
        parent.wait(10)
        killed = time.monotonic()
        while any(alive(pid) for pid in pids) and time.monotonic() - killed < 10:
            time.sleep(0.01)
        took = time.monotonic() - killed
        assert not any(alive(pid) for pid in pids), f"workers still alive after {took:.2f}s"
        # the bound is the contract; the load on a shared machine gets one extra second
        assert took < bound + 1.0, f"{mode}: workers took {took:.2f}s to exit"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
