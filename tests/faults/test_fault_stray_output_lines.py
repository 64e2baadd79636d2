"""Fault class: output that bypasses the log pipeline breaks the JSON log stream.

Before: Python and asyncio wrote their own complaints to stderr as plain text, in the middle of
the JSON lines of ``ron-kernel run --log-format json``: "Task was destroyed but it is
pending!", "RuntimeWarning: coroutine ... was never awaited", warnings, records of libraries'
stdlib loggers, "Exception ignored in ..." (unraisable exceptions).

Rule: ``ron-kernel run`` routes them all through the kernel's log pipeline
(``_logging.route_process_output``: stdlib logging, ``warnings.showwarning``,
``sys.unraisablehook``; the loop's exception handler): with ``--log-format json`` every line on
stderr is one JSON object. Tried: an app whose factory and child leave a pending task to be
garbage-collected, call a coroutine function without awaiting it, warn, log through a stdlib
logger and drop an object whose ``__del__`` raises; on asyncio and uvloop, ended by Ctrl-C.
"""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

from _faults_support import Kernel, in_parallel, started

LITTERING_APP = textwrap.dedent("""
    import asyncio, gc, logging, warnings

    async def _forever():
        await asyncio.Event().wait()

    async def _never_awaited():
        pass

    class _Grumpy:
        def __del__(self):
            raise ValueError("grumpy to the end")

    def _litter(where):
        asyncio.get_running_loop().create_task(_forever())  # pending, and nobody holds it
        _never_awaited()                                     # a coroutine never awaited
        warnings.warn(f"careless {where}", UserWarning)
        logging.getLogger("some.library").warning("library says %s", where)
        _Grumpy()
        gc.collect()

    async def litterbug(ctx):
        _litter("child")
        await asyncio.sleep(0.05)
        gc.collect()
        ctx.ready()
        print("littered", flush=True)
        await ctx.shutdown.wait()

    async def build(kernel):
        _litter("factory")
        await asyncio.sleep(0.05)
        gc.collect()
        kernel.supervise("litterbug", litterbug)
""")

EXPECTED = {"asyncio_error", "python_warning", "stdlib_log", "unraisable_exception"}


def test_every_stderr_line_is_json(tmp_path: Path):
    (tmp_path / "litter_app.py").write_text(LITTERING_APP)

    def one(loop: str) -> tuple[str, str]:
        with started() as procs:
            k = Kernel(tmp_path, ["run", "--app", "litter_app:build", "--log-format", "json",
                                  "--loop", loop], name=loop)
            procs.append(k)
            k.wait_for("the litter", lambda: "littered" in k.out)
            k.signal(signal.SIGINT)
            assert k.wait(15) == 0, k.err[-3000:]
            return loop, k.err

    for loop, err in in_parallel(one, ["asyncio", "uvloop"]):
        lines = err.splitlines()
        assert lines
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{loop}: a line that is not JSON: {line!r}") from None
        seen = {e["event"] for e in parsed}
        assert EXPECTED <= seen, (loop, EXPECTED - seen)
        reasons = " ".join(str(e.get("reason")) for e in parsed)
        for needle in ("Task was destroyed but it is pending", "was never awaited",
                       "careless child", "careless factory", "library says child"):
            assert needle in reasons, (loop, needle)
