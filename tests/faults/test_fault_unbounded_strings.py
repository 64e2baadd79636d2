"""Fault class: unbounded strings from user code.

Rule: a crash reason (event, ``/status`` ``last_reason``) is at most 2,048 characters, keeps
its start and its end and says how much was cut; the traceback in ``/status`` is at most 4 KB;
a log line's exception text at most 16 KiB. Tried: a 200 KB exception message.
"""

from __future__ import annotations

import io

import orjson
from _faults_support import until

from ron_kernel import Bus, KernelEvent
from ron_kernel._text import MAX_REASON_CHARS, cap
from ron_kernel.logging import configure_logging
from ron_kernel.supervisor import ChildContext, Supervisor


def test_cap_keeps_both_ends_and_says_how_much_was_cut():
    text = "A" * 100_000 + "Z" * 100_000
    out = cap(text, 2048)
    assert len(out) <= 2048 and out.startswith("AAA") and out.endswith("ZZZ")
    assert "chars cut" in out
    assert cap("short") == "short"


async def test_a_200kb_exception_message_gives_bounded_reason_status_and_logs():
    out = io.StringIO()
    configure_logging(stream=out)
    huge = "start-" + "x" * 200_000 + "-end"
    bus: Bus[KernelEvent] = Bus(16)
    rx = bus.subscribe()
    runs = {"n": 0}

    async def child(ctx: ChildContext) -> None:
        runs["n"] += 1
        if runs["n"] == 1:
            raise ValueError(huge)
        await ctx.shutdown.wait()

    sup = Supervisor(bus=bus, min_backoff=0, max_backoff=0.001)
    sup.add("talker", child)
    async with sup:
        await until(lambda: sup.snapshot()["talker"]["restarts"] == 1)
        info = sup.snapshot()["talker"]
    event = rx.try_recv()
    assert isinstance(event, KernelEvent.ServiceCrashed)
    assert len(event.reason) <= MAX_REASON_CHARS
    assert event.reason.startswith("panic: ValueError: start-") and event.reason.endswith("-end")
    assert info["last_reason"] == event.reason
    assert info["last_traceback"] is not None and len(info["last_traceback"]) <= 4096
    assert len(orjson.dumps(info)) < 8_000
    longest = max(len(line) for line in out.getvalue().splitlines())
    assert longest < 24_000, longest
