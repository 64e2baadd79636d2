"""Contracts between kernel parts: what a real reload logs, who owns logging, one quarantine
event, and the spans the kernel opens by itself."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ron_kernel import KernelEvent, _logging, _tracing
from ron_kernel.kernel import Kernel
from ron_kernel.logging import configure_logging
from ron_kernel.supervisor import ChildContext

ARGV = ["--obs-http", "false"]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RON_CONFIG", raising=False)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    _tracing.use_tracer_provider(provider)
    yield exp
    _tracing.use_tracer_provider(None)


async def _until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def _lines(out: io.StringIO, event: str) -> list[dict[str, object]]:
    lines = [orjson.loads(raw) for raw in out.getvalue().splitlines()]
    return [line for line in lines if line["event"] == event]


async def test_a_real_reload_logs_the_changed_key_and_hides_secret_values(tmp_path):
    out = io.StringIO()
    configure_logging(stream=out)
    cfg = tmp_path / "Config.toml"
    cfg.write_text('[log]\nlevel = "info"\n')
    async with Kernel(path=cfg, env={}, argv=ARGV, watch_config=False,
                      handle_sighup=False) as k:
        cfg.write_text('[log]\nlevel = "warn"\n')
        assert k.config_cell.reload()
        [updated] = _lines(out, "config_updated")
        assert updated["changed"] == [
            {"key": "log.level", "old": "'info'", "new": "'warn'", "applies": "immediate"}]
        # a rejected reload: its problems name the keys, never the secret values
        cfg.write_text('[log]\nlevel = "loud"\n[bus]\napi_token = "s3cr3t-1"\n'
                       'endpoint = "postgres://u:s3cr3t-2@db/x"\n')
        assert not k.config_cell.reload()
    [rejected] = _lines(out, "config_reload_rejected")
    text = orjson.dumps(rejected).decode()
    assert "bus.api_token" in text and "bus.endpoint" in text and "log.level" in text
    assert "postgres://***@db/x" in text
    assert "s3cr3t" not in out.getvalue()


async def test_an_embedders_logging_setup_survives_kernel_start_and_reload(tmp_path):
    out = io.StringIO()
    configure_logging(format="text", level="debug", stream=out)
    cfg = tmp_path / "Config.toml"
    cfg.write_text('[log]\nformat = "json"\nlevel = "error"\n[amnesia]\nenabled = true\n')
    async with Kernel(path=cfg, env={}, argv=ARGV, watch_config=False,
                      handle_sighup=False) as k:
        assert (_logging._settings.format, _logging._settings.level) == ("text", 10)
        assert _logging._settings.amnesia is True  # the kernel still sets the amnesia field
        cfg.write_text('[log]\nformat = "json"\nlevel = "warn"\n')
        assert k.config_cell.reload()
        assert (_logging._settings.format, _logging._settings.level) == ("text", 10)
    assert "kernel_started" in out.getvalue()  # the kernel's lines went to the embedder's stream


async def test_quarantine_publishes_health_false_once_under_the_kernel():
    async def crasher(ctx: ChildContext) -> None:
        ctx.ready()
        raise RuntimeError("boom")

    k = Kernel(env={}, argv=[*ARGV, "--sup-restart-cap", "1", "--sup-min-backoff", "0s",
                             "--sup-max-backoff", "1ms"], watch_config=False,
               handle_sighup=False)
    rx = k.bus.subscribe()
    async with k:
        k.supervise("crasher", crasher)
        await _until(lambda: k.supervisor.snapshot()["crasher"]["state"] == "quarantined")
        events = rx.try_recv_many()
    down = [e for e in events if e == KernelEvent.Health(service="crasher", ok=False)]
    crashes = [e for e in events if isinstance(e, KernelEvent.ServiceCrashed)]
    assert len(crashes) == 2  # the first run and the one restart the cap allows
    # one Health(ok=False) per crash while it was ready: the quarantine adds none of its own
    assert len(down) == 2


async def test_quarantine_of_a_child_that_never_reported_ready_is_announced_once():
    async def crasher(ctx: ChildContext) -> None:
        raise RuntimeError("boom")

    k = Kernel(env={}, argv=[*ARGV, "--sup-restart-cap", "1", "--sup-min-backoff", "0s",
                             "--sup-max-backoff", "1ms"], watch_config=False,
               handle_sighup=False)
    rx = k.bus.subscribe()
    async with k:
        k.supervise("crasher", crasher)
        await _until(lambda: k.supervisor.snapshot()["crasher"]["state"] == "quarantined")
        events = rx.try_recv_many()
    assert events.count(KernelEvent.Health(service="crasher", ok=False)) == 1


async def test_the_kernel_opens_reload_and_restart_spans_by_itself(exporter, tmp_path):
    cfg = tmp_path / "Config.toml"
    cfg.write_text('[log]\nlevel = "info"\n')
    crashed = asyncio.Event()

    async def once(ctx: ChildContext) -> None:
        if not crashed.is_set():
            crashed.set()
            raise RuntimeError("first run fails")
        await ctx.shutdown.wait()

    async with Kernel(path=cfg, env={}, argv=[*ARGV, "--sup-min-backoff", "0s"],
                      watch_config=False, handle_sighup=False) as k:
        k.supervise("once", once)
        await _until(lambda: k.supervisor.snapshot()["once"]["restarts"] == 1)
        cfg.write_text('[log]\nlevel = "warn"\n')
        assert k.config_cell.reload()
    spans = {sp.name: sp for sp in exporter.get_finished_spans()}
    restart = spans["kernel.supervisor.restart"]
    assert restart.attributes is not None and restart.attributes["child"] == "once"
    reload = spans["kernel.config.reload"]
    assert reload.attributes is not None and reload.attributes["outcome"] == "applied"
