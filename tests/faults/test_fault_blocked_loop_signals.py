"""Fault class: a blocked event loop holds the operator's second signal.

Before: a child calling ``time.sleep(8)`` during shutdown held the process for 8 s despite a
2 s drain deadline and a second Ctrl-C at +1 s: the second-signal handler was a
``loop.add_signal_handler`` callback, which waits for the loop.

Rule: after the first SIGINT/SIGTERM, a plain ``signal.signal`` handler is in place; a second
SIGINT or SIGTERM exits at once with status 130 (one best-effort line on stderr, then
``os._exit``), whatever the loop is doing. Tried: ``ron-kernel run --loop asyncio|uvloop`` with
such a child, and an embedder's own ``Kernel.run()`` (no ``ron-kernel`` command around it) on
both loops; the second signal SIGINT or SIGTERM.
"""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path

from _faults_support import PY, Kernel, in_parallel, started

SLEEPY_APP = textwrap.dedent("""
    import time

    async def sleepy(ctx):
        ctx.ready()
        await ctx.shutdown.wait()
        print("blocking the loop", flush=True)
        time.sleep(8)          # during the drain: the loop is stuck here

    def build(kernel):
        kernel.supervise("sleepy", sleepy)
""")

EMBEDDED = textwrap.dedent("""
    import asyncio, signal, sys, time
    from ron_kernel.kernel import Kernel

    async def sleepy(ctx):
        ctx.ready()
        await ctx.shutdown.wait()
        print("blocking the loop", flush=True)
        time.sleep(8)

    async def announce(before):
        # "up" once Kernel.run() has taken SIGINT over (before that Ctrl-C is the embedder's)
        while signal.getsignal(signal.SIGINT) is before:
            await asyncio.sleep(0.01)
        print("up", flush=True)

    async def main():
        k = Kernel(env={}, argv=["--drain-deadline", "2s"], watch_config=False)
        k.supervise("sleepy", sleepy)
        await k.start()
        waiter = asyncio.ensure_future(announce(signal.getsignal(signal.SIGINT)))
        await k.run()
        waiter.cancel()

    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
""")


def _second_signal_exits_at_once(k: Kernel, second: signal.Signals) -> float:
    k.signal(signal.SIGINT)
    k.wait_for("the blocked drain", lambda: "blocking the loop" in k.out)
    time.sleep(1.0)
    assert k.p.poll() is None, "the drain is still blocked"
    t0 = time.monotonic()
    k.signal(second)
    code = k.wait(6.0)  # the sleep would hold it ~7 s more
    took = time.monotonic() - t0
    assert code == 130, k.err[-3000:]
    assert f"second {second.name} while" in k.err, k.err[-3000:]
    return took


def test_a_second_signal_ends_the_process_while_a_child_blocks_the_loop(tmp_path: Path):
    (tmp_path / "sleepy_app.py").write_text(SLEEPY_APP)
    cases = [("run", "asyncio", signal.SIGINT), ("run", "uvloop", signal.SIGTERM),
             ("embedded", "asyncio", signal.SIGTERM), ("embedded", "uvloop", signal.SIGINT)]

    def one(case: tuple[str, str, signal.Signals]) -> str:
        how, loop, second = case
        name = f"{how}-{loop}-{second.name}"
        with started() as procs:
            if how == "run":
                k = Kernel(tmp_path, ["run", "--app", "sleepy_app:build", "--drain-deadline",
                                      "2s", "--loop", loop], name=name)
                procs.append(k)
                k.wait_for("running", lambda: "running;" in k.out)
                time.sleep(0.3)
            else:  # an embedder's own Kernel.run(), no ron-kernel command around it
                k = Kernel(tmp_path, [loop], exe=[PY, "-c", EMBEDDED], name=name)
                procs.append(k)
                k.wait_for("up", lambda: "up" in k.out)
            took = _second_signal_exits_at_once(k, second)
            if how == "embedded":
                assert f"second {second.name} while draining" in k.err
        return f"{name}: exit 130 {took * 1e3:.0f} ms after the second signal"

    for line in in_parallel(one, cases):
        print(line)
