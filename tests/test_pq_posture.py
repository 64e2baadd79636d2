"""PQ posture pass-through: policy gating of /readyz, downgrade and missing-posture counters."""

from __future__ import annotations

import io
from collections.abc import Iterator

import aiohttp
import orjson
import pytest

from ron_kernel import Metrics
from ron_kernel._logging import configure_logging


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(stream=stream)
    yield stream
    configure_logging()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_pq_series_are_present_with_zero_values_when_pq_is_off():
    text = Metrics().render().decode()
    assert 'pq_handshake_total{amnesia="off",kex="x25519",mode="off",role="server"} 0.0' in text
    assert ('pq_downgrade_events_total{amnesia="off",reason="classical_negotiated"} 0.0'
            in text)
    assert 'pq_posture_missing_total{amnesia="off"} 0.0' in text
    assert ('readiness_degraded_total{amnesia="off",cause="pq_required_but_unavailable"} 0.0'
            in text)


def test_classical_posture_is_informational_when_pq_is_not_required():
    m = Metrics()
    m.health.set("svc", True)
    m.health.report_pq_posture("svc", "classical")
    assert m.health.all_ready()
    assert m.counters.pq_handshake_total.get("off", "x25519", "server") == 1
    assert m.counters.pq_downgrade_events_total.total() == 0


def test_classical_posture_under_require_pq_degrades_counts_and_logs(log_stream):
    m = Metrics()
    h = m.health
    h.configure_pq("hybrid", True)
    h.report_pq_posture("svc-a", "classical", kex="x25519", role="client")
    h.set("svc-a", True)
    assert not h.all_ready()
    assert h.missing() == ["pq_required_but_unavailable"]
    assert m.counters.pq_downgrade_events_total.get("classical_negotiated") == 1
    assert m.counters.readiness_degraded_total.get("pq_required_but_unavailable") == 1
    lines = [x for x in _lines(log_stream) if x["event"] == "pq_downgrade_detected"]
    assert lines and lines[0]["peer"] == "svc-a"
    assert lines[0]["negotiated"] == "classical" and lines[0]["required"] == "hybrid"
    assert lines[0]["reason"] == "pq_required_but_unavailable"
    # a later hybrid report clears it
    h.report_pq_posture("svc-a", "hybrid", kex="hybrid")
    assert h.all_ready()
    assert m.counters.pq_handshake_total.get("hybrid", "hybrid", "server") == 1


def test_pq_only_policy_refuses_a_hybrid_posture():
    m = Metrics()
    m.health.configure_pq("pq-only", True)
    m.health.set("svc", True)
    m.health.report_pq_posture("svc", "hybrid")
    assert m.health.missing() == ["pq_required_but_unavailable"]
    assert m.counters.pq_downgrade_events_total.get("hybrid_negotiated") == 1
    m.health.report_pq_posture("svc", "pq-only")
    assert m.health.all_ready()


def test_turning_the_requirement_on_rechecks_reported_postures():
    m = Metrics()
    h = m.health
    h.set("svc", True)
    h.report_pq_posture("svc", "classical")
    assert h.all_ready()
    h.configure_pq("hybrid", True)
    assert h.missing() == ["pq_required_but_unavailable"]
    h.configure_pq("hybrid", False)
    assert h.all_ready()


def test_a_ready_service_without_a_posture_counts_posture_missing(log_stream):
    m = Metrics()
    h = m.health
    h.configure_pq("hybrid", True)
    h.set("svc-a", True)
    assert m.counters.pq_posture_missing_total.get() == 1
    assert any(x["event"] == "pq_posture_missing" for x in _lines(log_stream))
    h.set("svc-b", True)
    h.report_pq_posture("svc-b", "hybrid")
    assert m.counters.pq_posture_missing_total.get() == 2
    # services already ready when the requirement arrives are counted then
    m2 = Metrics()
    m2.health.set("x", True)
    m2.health.configure_pq("off", True)
    assert m2.counters.pq_posture_missing_total.get() == 1


def test_an_unknown_posture_is_refused_with_the_value_named():
    with pytest.raises(ValueError, match="'quantum'"):
        Metrics().health.report_pq_posture("svc", "quantum")


async def test_readyz_is_503_with_the_pq_reason_over_http():
    m = Metrics()
    m.health.configure_pq("hybrid", True)
    m.health.set("svc-a", True)
    m.health.report_pq_posture("svc-a", "classical")
    task, (host, port) = await m.serve("127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/readyz") as r:
            assert r.status == 503
            body = await r.json()
        assert body["degraded"] is True
        assert body["missing"] == ["pq_required_but_unavailable"]
        assert body["pq_required"] is True and body["pq_mode"] == "hybrid"
        assert body["pq_posture"] == {"svc-a": "classical"}
    finally:
        task.cancel()
