"""Fault class: a failure while reporting a crash.

Rule: the restart decision never depends on an observer. The supervisor decides and schedules
first, then reports; every report (log line, event, readiness) is isolated: a failing sink is
counted in ``observer_errors_total``/dropped log lines, and text that UTF-8 cannot carry is
escaped in logs, events and ``/status``. Tried: exception messages with lone surrogates (a file
name decoded with surrogate escapes), an ``__str__`` that raises, a closed log stream.
"""

from __future__ import annotations

import io

import aiohttp
import orjson
from _faults_support import until

from ron_kernel import KernelEvent, _logging
from ron_kernel.kernel import Kernel
from ron_kernel.logging import configure_logging
from ron_kernel.supervisor import ChildContext, Supervisor

ARGV = ["--obs-http", "true", "--obs-addr", "127.0.0.1:0", "--sup-min-backoff", "0s",
        "--sup-max-backoff", "1ms"]


def _crash_once(exc: BaseException) -> object:
    runs = {"n": 0}

    async def child(ctx: ChildContext) -> None:
        runs["n"] += 1
        ctx.ready()
        if runs["n"] == 1:
            raise exc
        await ctx.shutdown.wait()

    return child


async def test_unencodable_crash_text_is_escaped_and_supervision_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = OSError(2, "No such file", "/data/caf\udce9.bin")  # surrogate-escaped file name
    async with Kernel(env={}, argv=ARGV, watch_config=False, handle_sighup=False) as k:
        rx = k.bus.subscribe()
        async with aiohttp.ClientSession() as http:
            events = await http.get(k.urls()["events"])
            k.supervise("reader", _crash_once(bad))
            await until(lambda: k.supervisor.snapshot()["reader"]["restarts"] == 1)
            await until(lambda: k.supervisor.snapshot()["reader"]["state"] == "running")
            async with http.get(k.urls()["status"]) as r:
                assert r.status == 200
                body = await r.json()
            reason = body["supervisor"]["reader"]["last_reason"]
            assert "caf\\udce9" in reason  # escaped, not lost
            line = await events.content.readline()
            while b"ServiceCrashed" not in line:
                line = await events.content.readline()
            assert orjson.loads(line)["service"] == "reader"
            events.close()
        crashed = [e for e in rx.try_recv_many() if isinstance(e, KernelEvent.ServiceCrashed)]
        assert len(crashed) == 1 and "\\udce9" in crashed[0].reason
        assert k.health.all_ready()


async def test_a_str_that_raises_still_gives_a_reason_and_a_restart():
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    sup = Supervisor(min_backoff=0, max_backoff=0.001)
    sup.add("nasty", _crash_once(Nasty()))  # type: ignore[arg-type]
    async with sup:
        await until(lambda: sup.snapshot()["nasty"]["restarts"] == 1)
        assert sup.snapshot()["nasty"]["last_reason"] == "panic: Nasty: <Nasty.__str__ failed>"


async def test_a_closed_log_stream_drops_lines_but_never_stops_supervision():
    dead = io.StringIO()
    dead.close()
    configure_logging(stream=dead)
    before = _logging.dropped_lines()
    sup = Supervisor(min_backoff=0, max_backoff=0.001, restart_cap=50)
    crashes = {"n": 0}

    async def always(ctx: ChildContext) -> None:
        crashes["n"] += 1
        raise RuntimeError("again")

    sup.add("always", always)
    async with sup:
        await until(lambda: crashes["n"] >= 5)
    assert _logging.dropped_lines() > before


async def test_a_failing_observer_is_counted_and_the_restart_still_happens():
    from ron_kernel import HealthState, Metrics

    class BrokenHealth(HealthState):
        def set(self, service: str, ok: bool) -> None:
            if not ok:
                raise RuntimeError("observer down")
            super().set(service, ok)

    health = BrokenHealth()
    metrics = Metrics(health=health)
    sup = Supervisor(metrics=metrics, health=health, min_backoff=0, max_backoff=0.001)
    sup.add("svc", _crash_once(RuntimeError("boom")))  # type: ignore[arg-type]
    async with sup:
        await until(lambda: sup.snapshot()["svc"]["restarts"] == 1)
    assert metrics.counters.observer_errors_total.get("health") == 1


def test_a_field_the_renderer_cannot_take_never_raises_into_the_caller():
    # Found by the broken-output-streams suite (issue 11): in text format the console renderer
    # raised TypeError on the loop monitor's `stack` (a list), from `log.info` into the
    # kernel's shutdown, and a clean Ctrl-C ended with status 1.
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        __str__ = __repr__

    for fmt in ("text", "json"):
        out = io.StringIO()
        configure_logging(format=fmt, stream=out)
        before = _logging.dropped_lines()
        log = _logging.get_logger("probe")
        log.info("loop_unblocked", stack=["a.py:1 in f", "b.py:2 in g"])
        log.info("odd_value", thing=Unprintable())
        lines = out.getvalue().splitlines()
        assert any("loop_unblocked" in line for line in lines), lines
        assert "a.py:1 in f" in out.getvalue()
        assert any("odd_value" in line for line in lines), lines
        assert _logging.dropped_lines() - before <= 1  # the odd line, written in minimal form
    _logging.reset_logging()
