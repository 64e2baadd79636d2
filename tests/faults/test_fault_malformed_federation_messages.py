"""Fault class: malformed messages on the federation subjects (``<prefix>.>``).

Rule: anything on the fleet's subjects that is not a well-formed remote event (not JSON, not
an object, an unknown ``type``, a field of the wrong type, over 64 KiB, no ``node`` or ``seq``,
a subject that does not match the payload) is dropped and counted in
``federation_rejected_total{reason}``; it is never raised into a fleet receiver, never stops
the kernel, and the next valid event still arrives. Tried over a real nats-server, and with
arbitrary bytes and subjects in process.
"""

from __future__ import annotations

import asyncio

import orjson
from _faults_support import until
from _nats_support import federated_kernel, nats_server, prefix, raw_client
from hypothesis import given, settings
from hypothesis import strategies as st

from ron_kernel import KernelEvent
from ron_kernel._fleet import MAX_MESSAGE_BYTES, Fleet, encode
from ron_kernel.errors import Empty

__all__ = ["nats_server", "raw_client"]  # fixtures, used by name


def _cases(p: str) -> list[tuple[str, bytes, str]]:
    health = f"{p}.web-1.kernel.health"

    def js(**fields: object) -> bytes:
        return orjson.dumps(fields)

    good = {"type": "Health", "service": "s", "ok": True, "node": "web-1", "seq": 1, "ts": 1.0}
    return [
        (health, b"not json", "not_json"),
        (health, b"\xff\xfe\x00garbage", "not_json"),
        (health, b"[1, 2, 3]", "not_json"),
        (health, b"[" * 5000 + b"]" * 5000, "not_json"),
        (health, js(**{**good, "type": "Reboot"}), "unknown_type"),
        (health, js(**{**good, "type": 7}), "unknown_type"),
        (health, js(**{**good, "ok": "yes"}), "bad_field"),
        (health, js(**{**good, "seq": "1"}), "bad_field"),
        (health, js(**{**good, "seq": True}), "bad_field"),
        (health, js(**{**good, "seq": 0}), "bad_field"),
        (health, js(**{**good, "node": 5}), "bad_field"),
        (health, js(**{**good, "ts": "noon"}), "bad_field"),
        (f"{p}.web-1.kernel.config.updated",
         js(type="ConfigUpdated", version=-1, node="web-1", seq=1), "bad_field"),
        (health, js(**{k: v for k, v in good.items() if k != "node"}), "missing_field"),
        (health, js(**{k: v for k, v in good.items() if k != "seq"}), "missing_field"),
        (health, js(**{k: v for k, v in good.items() if k != "service"}), "missing_field"),
        (health, js(**{k: v for k, v in good.items() if k != "type"}), "missing_field"),
        (health, js(**{**good, "pad": "x" * MAX_MESSAGE_BYTES}), "oversized"),
        (f"{p}.web-2.kernel.health", js(**good), "subject_mismatch"),
        (f"{p}.web-1.kernel.shutdown", js(**good), "subject_mismatch"),
        (f"{p}.web-1", js(**good), "bad_subject"),
    ]


async def test_malformed_messages_are_dropped_counted_and_never_reach_a_receiver(
        nats_server, raw_client):
    p = prefix()
    cases = _cases(p)
    async with federated_kernel(nats_server.url, "watcher", p) as k:
        rx = k.fleet.subscribe()
        await until(lambda: k.status()["federation"]["connected"], within=10)
        for subject, data, _ in cases:
            await raw_client.publish(subject, data)
        valid = KernelEvent.ServiceCrashed(service="after", reason="still flowing")
        await raw_client.publish(f"{p}.web-1.kernel.service.crashed",
                                 encode(valid, "web-1", 1, 1.0))
        await raw_client.flush()
        assert await asyncio.wait_for(rx.recv(), 5) == ("web-1", valid)
        try:
            extra = rx.try_recv()
        except Empty:
            extra = None
        assert extra is None
        rejected = k.metrics.counters.federation_rejected_total
        for reason in {reason for _, _, reason in cases}:
            want = sum(1 for _, _, r in cases if r == reason)
            assert rejected.get(reason) == want, reason
        assert k.status()["fleet"]["rejected"]["not_json"] == 4
        assert k.state == "running"
        assert 'federation_rejected_total{amnesia="off",reason="oversized"} 1.0' in \
            k.metrics.render().decode()


@settings(max_examples=300, deadline=None)
@given(subject=st.text(max_size=40), data=st.binary(max_size=300))
def test_arbitrary_bytes_and_subjects_never_raise(subject: str, data: bytes):
    fleet = Fleet(own_node="me", prefix="ron")
    rx = fleet.subscribe()
    fleet.receive("ron." + subject, data)
    fleet.receive("ron.web-1.kernel.health", data)
    status = fleet.status()
    assert sum(status["rejected"].values()) + status["received"] == 2 or \
        subject.startswith("me.")
    rx.close()
