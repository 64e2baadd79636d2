"""Metrics: a private registry per instance; the bus and mailbox counters, with amnesia."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from ron_kernel import Bus, Metrics
from ron_kernel.errors import Busy, Lagged
from ron_kernel.mailbox import Mailbox

BUS_FAMILIES = ("bus_published_total", "bus_no_receivers_total", "bus_receiver_lag_total",
                "bus_dropped_total", "bus_lagged_total")


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    key = (name, tuple(sorted({**labels, "amnesia": "off"}.items())))
    return _samples(metrics)[key]


def test_render_returns_prometheus_text_bytes() -> None:
    text = Metrics().render()
    assert isinstance(text, bytes)
    assert b"# TYPE bus_published_total counter" in text


@pytest.mark.parametrize("family", BUS_FAMILIES)
def test_every_bus_family_is_rendered_with_the_amnesia_label(family: str) -> None:
    samples = _samples(Metrics())
    assert samples[(family, (("amnesia", "off"),))] == 0
    samples_on = _samples(Metrics(amnesia=True))
    assert samples_on[(family, (("amnesia", "on"),))] == 0


def test_mailbox_families_carry_queue_and_amnesia_labels() -> None:
    metrics = Metrics(amnesia=True)
    box: Mailbox[int] = Mailbox(1, name="inbox", metrics=metrics)
    box.try_send(1)
    with pytest.raises(Busy):
        box.try_send(2)
    box.close(discard=True)
    samples = _samples(metrics)
    labels = (("amnesia", "on"), ("queue", "inbox"))
    assert samples[("busy_rejections_total", labels)] == 1
    assert samples[("queue_dropped_total", labels)] == 1
    assert samples[("queue_depth", labels)] == 0


def test_private_registries_do_not_see_each_other() -> None:
    a, b = Metrics(), Metrics()
    assert a.registry is not b.registry
    bus_a: Bus[int] = Bus(2, metrics=a)
    rx = bus_a.subscribe()
    for i in range(5):
        bus_a.publish(i)
    with pytest.raises(Lagged):
        rx.try_recv()
    Mailbox(1, name="only_a", metrics=a).try_send(1)
    # a user metric on one registry only
    Counter("app_events", "An application counter.", registry=a.registry).inc()
    # registering the same name on the other registry does not clash
    Counter("app_events", "An application counter.", registry=b.registry)

    assert _value(a, "bus_published_total") == 5
    assert _value(a, "bus_lagged_total") == 3
    assert _value(b, "bus_published_total") == 0
    assert _value(b, "bus_lagged_total") == 0
    assert ("queue_depth", (("amnesia", "off"), ("queue", "only_a"))) not in _samples(b)
    assert _samples(a)[("app_events_total", ())] == 1
    assert _samples(b)[("app_events_total", ())] == 0


def test_bus_counters_sum_over_every_bus_of_one_metrics() -> None:
    metrics = Metrics()
    one: Bus[int] = Bus(4, metrics=metrics)
    two: Bus[int] = Bus(4, metrics=metrics)
    keep = one.subscribe()
    one.publish(1)
    two.publish(2)  # no receivers
    two.close()
    two.publish(3)  # after close
    assert _value(metrics, "bus_published_total") == 3
    assert _value(metrics, "bus_no_receivers_total") == 1
    assert _value(metrics, "bus_dropped_total") == 1
    assert keep.try_recv() == 1


def test_receiver_lag_counts_reported_lag_only_while_lagged_counts_all_lag() -> None:
    metrics = Metrics()
    bus: Bus[int] = Bus(1, metrics=metrics)
    quiet, reporting = bus.subscribe(), bus.subscribe()
    for i in range(4):
        bus.publish(i)
    with pytest.raises(Lagged):
        quiet.try_recv()  # observed, but not reported through handle_recv
    try:
        reporting.try_recv()
    except Lagged as lag:
        assert Bus.handle_recv(lag, metrics) is None
    assert _value(metrics, "bus_lagged_total") == 6
    assert _value(metrics, "bus_receiver_lag_total") == 3


def test_queue_depth_sums_mailboxes_sharing_a_name_and_forgets_collected_ones() -> None:
    metrics = Metrics()
    a: Mailbox[int] = Mailbox(4, name="dup", metrics=metrics)
    b: Mailbox[int] = Mailbox(4, name="dup", metrics=metrics)
    a.try_send(1)
    b.try_send(1)
    b.try_send(2)
    assert _value(metrics, "queue_depth", queue="dup") == 3
    del a, b
    gc.collect()
    assert ("queue_depth", (("amnesia", "off"), ("queue", "dup"))) not in _samples(metrics)
