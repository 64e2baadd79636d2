"""HealthState: readiness rules, reasons, events, and the degraded counters."""

from __future__ import annotations

import pytest

from ron_kernel import Bus, HealthState, KernelEvent, Metrics


def test_all_ready_is_false_while_nothing_is_registered():
    h = HealthState()
    assert h.all_ready() is False
    assert h.missing() == ["no_services"]
    assert h.snapshot()["ready"] is False


def test_a_bare_health_state_has_no_prerequisites():
    h = HealthState()
    h.set("svc-a", True)
    assert h.all_ready() is True
    assert h.missing() == []


def test_kernel_prerequisites_block_readiness_until_satisfied():
    h = HealthState(prerequisites=("config", "bus_attached"))
    h.set("svc-a", True)
    assert h.missing() == ["config", "bus_attached"]
    h.satisfy("config")
    assert h.missing() == ["bus_attached"]
    h.attach_bus(Bus(capacity=8))
    assert h.all_ready() is True
    h.satisfy("config", ok=False)
    assert h.missing() == ["config"]


def test_missing_reasons_are_stable_and_human_readable():
    h = HealthState(prerequisites=("config",))
    h.set("svc-a", False)
    h.set("svc-b", True)
    h.quarantine("svc-b")
    assert h.missing() == ["config", "service:svc-a", "quarantined:svc-b"]
    h.quarantine("svc-b", on=False)
    h.set("svc-a", True)
    h.satisfy("config")
    assert h.missing() == []


def test_readiness_flips_both_ways_and_removal_forgets_a_service():
    h = HealthState()
    h.set("a", True)
    h.set("b", False)
    assert not h.all_ready()
    h.set("b", True)
    assert h.all_ready()
    h.set("a", False)
    assert not h.all_ready()
    h.remove("a")
    assert h.all_ready()
    assert h.snapshot()["services"] == {"b": True}


def test_snapshot_has_the_documented_keys():
    h = HealthState(amnesia=True, pq_mode="hybrid", pq_required=True)
    h.set("svc", True)
    snap = h.snapshot()
    assert snap["services"] == {"svc": True}
    assert snap["ready"] is True
    assert snap["missing"] == []
    assert snap["amnesia"] == "on"
    assert snap["pq_mode"] == "hybrid"
    assert snap["pq_required"] is True
    assert snap["pq_posture"] == {}


def test_unknown_pq_mode_is_refused_with_the_value_named():
    with pytest.raises(ValueError, match="'quantum'"):
        HealthState(pq_mode="quantum")
    with pytest.raises(ValueError, match=r"pq\.mode.*'x'"):
        HealthState().configure_pq("x", True)


async def test_each_readiness_change_publishes_a_health_event_on_the_attached_bus():
    bus: Bus[KernelEvent] = Bus(capacity=16)
    rx = bus.subscribe()
    h = HealthState()
    h.attach_bus(bus)
    h.set("svc-a", False)
    h.set("svc-a", False)  # no change: no event
    h.set("svc-a", True)
    got = rx.try_recv_many()
    assert got == [KernelEvent.Health(service="svc-a", ok=False),
                   KernelEvent.Health(service="svc-a", ok=True)]


async def test_kernel_publishes_are_the_sampled_bus_publish_latency():
    m = Metrics()
    bus: Bus[KernelEvent] = Bus(capacity=16, metrics=m)
    m.health.attach_bus(bus)
    m.health.set("svc", True)
    m.health.set("svc", False)
    assert m.counters.request_latency_seconds.count("bus_publish") == 2


def test_degradations_are_counted_by_cause():
    m = Metrics()
    h = m.health
    h.set("a", True)
    h.set("a", False)
    h.quarantine("a")
    h.quarantine("a")  # already quarantined: counted once
    h.require("config")
    h.satisfy("config")
    h.satisfy("config", ok=False)
    c = m.counters.readiness_degraded_total
    assert c.get("service") == 1
    assert c.get("quarantined") == 1
    assert c.get("config") == 1


def test_readiness_stays_cheap_with_many_services():
    # all_ready reads counters, never the service table: flipping one of 50k is one update
    h = HealthState()
    for i in range(50_000):
        h.set(f"svc-{i}", True)
    h.set("svc-25000", False)
    assert h._not_ready == 1
    assert not h.all_ready()
    h.set("svc-25000", True)
    assert h.all_ready()
