"""Tracing: kernel.<component>.<operation> spans via opentelemetry, and the no-op path."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ron_kernel import _tracing
from ron_kernel._logging import bind_corr_id


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    _tracing.use_tracer_provider(provider)
    yield exp
    _tracing.use_tracer_provider(None)


def test_spans_are_named_kernel_component_operation_with_attributes(exporter):
    with _tracing.kernel_span("config", "reload", version=3):
        pass
    [finished] = exporter.get_finished_spans()
    assert finished.name == "kernel.config.reload"
    assert finished.attributes == {"version": 3}


def test_the_bound_corr_id_becomes_a_span_attribute(exporter):
    with bind_corr_id("req-9"), _tracing.kernel_span("supervisor", "restart", child="svc-a"):
        pass
    [finished] = exporter.get_finished_spans()
    assert finished.attributes == {"child": "svc-a", "corr_id": "req-9"}


def test_an_exception_is_recorded_and_re_raised(exporter):
    with pytest.raises(RuntimeError), _tracing.kernel_span("bus", "close"):
        raise RuntimeError("x")
    [finished] = exporter.get_finished_spans()
    assert not finished.status.is_ok
    assert finished.events[0].name == "exception"


async def test_a_scrape_is_traced(exporter):
    import aiohttp

    from ron_kernel import Metrics

    m = Metrics()
    task, (host, port) = await m.serve("127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/metrics") as r:
            assert r.status == 200
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [sp.name for sp in exporter.get_finished_spans()] == ["kernel.metrics.scrape"]


def test_without_opentelemetry_span_is_a_shared_no_op():
    # A real interpreter where opentelemetry cannot be imported (the extra is absent).
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from ron_kernel import _tracing\n"
        "assert not _tracing.enabled()\n"
        "a = _tracing.kernel_span('bus', 'publish', n=1)\n"
        "b = _tracing.kernel_span('config', 'reload')\n"
        "assert a is b\n"
        "with a as value:\n"
        "    assert value is None\n"
        "try:\n"
        "    with a:\n"
        "        raise KeyError('passes through')\n"
        "except KeyError:\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
