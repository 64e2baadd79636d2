"""KernelEvent: four frozen variants, a closed set, flat JSON with "type", strict decoding."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ron_kernel import KernelEvent

ALL_EVENTS = [
    KernelEvent.Health(service="svc", ok=True),
    KernelEvent.ConfigUpdated(version=3),
    KernelEvent.ServiceCrashed(service="svc", reason="panic: boom"),
    KernelEvent.Shutdown(),
]


def test_there_are_exactly_four_variants_and_all_are_kernel_events() -> None:
    names = {type(ev).__name__ for ev in ALL_EVENTS}
    assert names == {"Health", "ConfigUpdated", "ServiceCrashed", "Shutdown"}
    assert all(isinstance(ev, KernelEvent) for ev in ALL_EVENTS)
    assert KernelEvent.Health.__qualname__ == "KernelEvent.Health"


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_variants_are_frozen(event: KernelEvent) -> None:
    for field in dataclasses.fields(event):  # type: ignore[arg-type]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, field.name, "x")
    with pytest.raises((AttributeError, TypeError)):
        event.extra = 1  # type: ignore[attr-defined]


def test_the_set_is_closed_subclassing_raises() -> None:
    with pytest.raises(TypeError, match="closed set"):
        class Extra(KernelEvent):
            pass
    with pytest.raises(TypeError, match="closed set"):
        class MoreHealth(KernelEvent.Health):  # type: ignore[misc]
            pass


def test_the_base_class_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError, match="use one of its variants"):
        KernelEvent()


def test_events_are_hashable_and_equal_by_value() -> None:
    a = KernelEvent.Health(service="svc", ok=True)
    b = KernelEvent.Health(service="svc", ok=True)
    c = KernelEvent.Health(service="svc", ok=False)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c, KernelEvent.Shutdown(), KernelEvent.Shutdown()}) == 3
    # same fields, different variant: not equal
    assert KernelEvent.Shutdown() != KernelEvent.ConfigUpdated(version=0)


def _describe(ev: KernelEvent) -> str:
    match ev:
        case KernelEvent.Health(service=name, ok=True):
            return f"{name} ready"
        case KernelEvent.Health(service=name, ok=False):
            return f"{name} not ready"
        case KernelEvent.ConfigUpdated(version=v):
            return f"config v{v}"
        case KernelEvent.ServiceCrashed(service=name, reason=why):
            return f"{name} crashed: {why}"
        case KernelEvent.Shutdown():
            return "shutdown"
    return "unmatched"


def test_match_with_keyword_patterns_selects_the_right_variant() -> None:
    assert [_describe(ev) for ev in ALL_EVENTS] == [
        "svc ready", "config v3", "svc crashed: panic: boom", "shutdown"]
    assert _describe(KernelEvent.Health(service="db", ok=False)) == "db not ready"


def test_to_json_is_flat_with_a_type_field() -> None:
    assert json.loads(KernelEvent.Health(service="a", ok=False).to_json()) == {
        "type": "Health", "service": "a", "ok": False}
    assert json.loads(KernelEvent.ConfigUpdated(version=7).to_json()) == {
        "type": "ConfigUpdated", "version": 7}
    assert json.loads(KernelEvent.ServiceCrashed(service="a", reason="r").to_json()) == {
        "type": "ServiceCrashed", "service": "a", "reason": "r"}
    assert json.loads(KernelEvent.Shutdown().to_json()) == {"type": "Shutdown"}


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_from_json_round_trips_every_variant(event: KernelEvent) -> None:
    text = event.to_json()
    assert KernelEvent.from_json(text) == event
    assert KernelEvent.from_json(text.encode()) == event


def test_from_json_ignores_unknown_fields() -> None:
    ev = KernelEvent.from_json('{"type":"ConfigUpdated","version":2,"extra":"x","n":1}')
    assert ev == KernelEvent.ConfigUpdated(version=2)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be an object, got list"),
        ('{"service": "a"}', "missing the field 'type'"),
        ('{"type": "Reboot"}', "'type' has unknown value 'Reboot'"),
        ('{"type": 5}', "'type' has unknown value 5"),
        ('{"type": "Health", "ok": true}', "Health JSON is missing the field 'service'"),
        ('{"type": "Health", "service": "a"}', "missing the field 'ok'"),
        ('{"type": "Health", "service": 1, "ok": true}', "field 'service' must be str, got int"),
        ('{"type": "Health", "service": "a", "ok": 1}', "field 'ok' must be bool, got int"),
        ('{"type": "ConfigUpdated", "version": true}', "field 'version' must be int, got bool"),
        ('{"type": "ConfigUpdated", "version": "3"}', "field 'version' must be int, got str"),
        ('{"type": "ConfigUpdated", "version": 1.0}', "field 'version' must be int, got float"),
        ('{"type": "ServiceCrashed", "service": "a"}', "missing the field 'reason'"),
    ],
)
def test_from_json_is_strict_and_names_the_field(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        KernelEvent.from_json(text)


def test_bool_is_not_accepted_as_an_int_version_even_in_the_constructor() -> None:
    with pytest.raises(ValueError, match="version must be an int >= 0"):
        KernelEvent.ConfigUpdated(version=True)
    with pytest.raises(ValueError, match="version must be an int >= 0"):
        KernelEvent.ConfigUpdated(version=-1)
