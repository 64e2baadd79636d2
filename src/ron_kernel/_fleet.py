"""The fleet view: remote KernelEvents of other kernels, kept apart from the local bus.

The wire format of federation lives here too (docs/FEDERATION.md): one NATS message per event
on ``<prefix>.<node>.<topic>``, the payload the flat INTEROP §2.2 JSON plus ``node``, ``seq``
and ``ts``. This module has no NATS dependency: :class:`Fleet` is fed raw ``(subject, data)``
pairs by whoever holds the connection (``_federation`` in a kernel, ``ron-kernel tail --nats``).

Remote events never enter the local kernel bus: they go to the fleet's own bus, and
:meth:`Fleet.subscribe` gives a :class:`FleetReceiver` of ``(node, KernelEvent)``. A gap in a
node's ``seq`` is published on that bus as a marker *before* the event that revealed it; a
receiver reaching the marker raises :class:`FleetLagged` (a :class:`~ron_kernel.errors.Lagged`
with ``node``) once, then continues with that event.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from ._bus import DEFAULT_CAPACITY, Bus, Receiver
from ._config import check_subject_token
from ._counters import FEDERATION_REJECT_REASONS
from ._errors import Closed, Lagged
from ._events import EventDecodeError, KernelEvent, from_mapping
from ._logging import get_logger
from ._text import printable_value

if TYPE_CHECKING:
    from ._counters import KernelCounters

__all__ = ["MAX_MESSAGE_BYTES", "MAX_NODES", "TOPICS", "Fleet", "FleetLagged", "FleetReceiver",
           "Rejected", "RemoteEvent", "decode", "encode", "subject_for"]

_log = get_logger("fleet")

MAX_MESSAGE_BYTES = 64 * 1024
"""A federation message larger than this is rejected (``reason="oversized"``)."""

MAX_NODES = 1024
"""Nodes the fleet view remembers; the one heard from least recently is forgotten first."""

TOPICS: dict[str, str] = {
    "Health": "kernel.health",
    "ConfigUpdated": "kernel.config.updated",
    "ServiceCrashed": "kernel.service.crashed",
    "Shutdown": "kernel.shutdown",
}
"""INTEROP §3.1: the topic of each KernelEvent variant."""

_MAX_SEQ = (1 << 63) - 1
_REJECT_LOG_EVERY = 10.0  # seconds between two warnings of one reject reason


def subject_for(prefix: str, node: str, variant: str) -> str:
    """``<prefix>.<node>.<topic>`` of a variant (``"Health"`` -> ``ron.web-1.kernel.health``)."""
    return f"{prefix}.{node}.{TOPICS[variant]}"


# One builder per variant (the set is closed): the hot path of every federated event is one
# dict display and one orjson.dumps. tests/test_federation.py checks them against to_json().
_PAYLOADS: dict[type, Callable[[Any, str, int, float], dict[str, Any]]] = {
    KernelEvent.Health: lambda e, node, seq, ts: {
        "type": "Health", "service": e.service, "ok": e.ok, "node": node, "seq": seq, "ts": ts},
    KernelEvent.ConfigUpdated: lambda e, node, seq, ts: {
        "type": "ConfigUpdated", "version": e.version, "node": node, "seq": seq, "ts": ts},
    KernelEvent.ServiceCrashed: lambda e, node, seq, ts: {
        "type": "ServiceCrashed", "service": e.service, "reason": e.reason, "node": node,
        "seq": seq, "ts": ts},
    KernelEvent.Shutdown: lambda e, node, seq, ts: {
        "type": "Shutdown", "node": node, "seq": seq, "ts": ts},
}


def encode(event: KernelEvent, node: str, seq: int, ts: float) -> bytes:
    """The wire payload: the event's flat INTEROP JSON plus ``node``, ``seq`` and ``ts``.

    Text UTF-8 cannot carry (lone surrogates) is escaped, as in ``KernelEvent.to_json``.
    """
    payload = _PAYLOADS[type(event)](event, node, seq, ts)
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return orjson.dumps(printable_value(payload))


class Rejected(Exception):
    """A federation message that is not a valid remote event; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RemoteEvent:
    """One event of another kernel: who sent it, its place in that node's run, and when."""

    node: str
    seq: int
    ts: float | None
    event: KernelEvent

    def to_json(self) -> str:
        """The wire form again (the tail prints it): the event's JSON plus node, seq, ts."""
        text = self.event.to_json()
        ts = "null" if self.ts is None else repr(self.ts)
        return f'{text[:-1]},"node":{orjson.dumps(self.node).decode()},"seq":{self.seq},"ts":{ts}}}'


def decode(subject: str, data: bytes, prefix: str) -> RemoteEvent:
    """Check and decode one message of ``<prefix>.>``; raise :class:`Rejected` when malformed.

    The subject must be ``<prefix>.<node>.<topic>`` with the topic of the event's type and the
    node of the payload's ``node``; ``seq`` an int >= 1; ``ts`` (optional) a number.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise Rejected("oversized", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
    head, _, rest = subject.partition(".")
    node, _, topic = rest.partition(".")
    if head != prefix or check_subject_token(node) is not None or not topic:
        raise Rejected("bad_subject", "not <prefix>.<node>.<topic>")
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Rejected("not_json", "not JSON") from None
    if not isinstance(payload, dict):
        raise Rejected("not_json", f"a JSON {type(payload).__name__}, not an object")
    for name in ("node", "seq"):
        if name not in payload:
            raise Rejected("missing_field", f"no {name!r}")
    sender, seq, ts = payload["node"], payload["seq"], payload.get("ts")
    if not isinstance(sender, str):
        raise Rejected("bad_field", "'node' is not a string")
    if type(seq) is not int or not 1 <= seq <= _MAX_SEQ:
        raise Rejected("bad_field", "'seq' is not an integer >= 1")
    if ts is not None and (type(ts) not in (int, float) or not math.isfinite(ts)):
        raise Rejected("bad_field", "'ts' is not a number")
    try:
        event = from_mapping(payload)
    except EventDecodeError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    if sender != node or topic != TOPICS[type(event).__name__]:
        raise Rejected("subject_mismatch", "the subject does not match the payload")
    return RemoteEvent(node, seq, None if ts is None else float(ts), event)


class FleetLagged(Lagged):
    """A fleet receiver missed events: ``missed`` of them, from ``node``.

    ``node`` names the node whose ``seq`` jumped (events lost between it and us: NATS, its
    buffer, a slow consumer), or is ``None`` when this receiver itself fell more than the fleet
    bus's capacity behind (events of any node).
    """

    def __init__(self, missed: int, node: str | None = None) -> None:
        super().__init__(missed)
        self.node = node
        if node is not None:
            self.args = (f"fleet: node {node!r} skipped {missed} event(s) (a gap in its seq)",)


@dataclass(frozen=True, slots=True)
class _Gap:
    node: str
    missed: int


_Item = RemoteEvent | _Gap


class FleetReceiver:
    """One reader of the fleet: ``(node, KernelEvent)`` pairs, in arrival order.

    Like a bus receiver (one per task; close it or use it as a context manager): ``recv``
    raises :class:`FleetLagged` once per gap, then continues; :class:`~ron_kernel.errors.Closed`
    after the kernel stopped and everything was read.
    """

    __slots__ = ("__weakref__", "_rx")

    def __init__(self, rx: Receiver[_Item]) -> None:
        self._rx = rx

    async def recv(self) -> tuple[str, KernelEvent]:
        """Wait for the next remote event; ``(node, event)``."""
        remote = await self.recv_remote()
        return remote.node, remote.event

    async def recv_remote(self) -> RemoteEvent:
        """Like :meth:`recv` with the node's ``seq`` and ``ts`` too."""
        try:
            item = await self._rx.recv()
        except Lagged as lag:
            raise FleetLagged(lag.missed) from None
        return _unwrap(item)

    def try_recv(self) -> tuple[str, KernelEvent]:
        """The next remote event without waiting (``Empty`` when there is none yet)."""
        try:
            item = self._rx.try_recv()
        except Lagged as lag:
            raise FleetLagged(lag.missed) from None
        remote = _unwrap(item)
        return remote.node, remote.event

    def __aiter__(self) -> AsyncIterator[tuple[str, KernelEvent]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, KernelEvent]]:
        """Yield ``(node, event)`` until Closed; gaps are skipped (they are counted already)."""
        while True:
            try:
                yield await self.recv()
            except FleetLagged:
                continue
            except Closed:
                return

    def close(self) -> None:
        """Stop receiving."""
        self._rx.close()

    @property
    def closed(self) -> bool:
        """Whether this receiver was closed."""
        return self._rx.closed

    def __len__(self) -> int:
        """Items not read yet (gap markers included)."""
        return len(self._rx)

    def __enter__(self) -> FleetReceiver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _unwrap(item: _Item) -> RemoteEvent:
    if type(item) is _Gap:
        raise FleetLagged(item.missed, item.node)
    assert isinstance(item, RemoteEvent)
    return item


class _NodeView:
    __slots__ = ("events", "gaps", "last_event_at", "last_seq", "last_ts", "last_type",
                 "missed", "restarts")

    def __init__(self, seq: int) -> None:
        self.last_seq = seq
        self.events = 0
        self.gaps = 0
        self.missed = 0
        self.restarts = 0
        self.last_event_at = 0.0
        self.last_ts: float | None = None
        self.last_type = ""


class Fleet:
    """The other kernels of the fleet as this kernel sees them (``kernel.fleet``).

    :meth:`subscribe` gives a :class:`FleetReceiver` of ``(node, KernelEvent)``; :meth:`status`
    lists the nodes seen (last event time, gaps). Fed by :meth:`receive` with raw federation
    messages: a malformed one is dropped and counted in ``federation_rejected_total{reason}``,
    never raised; this node's own events (``own_node``) are ignored. Without federation the
    fleet stays empty.
    """

    def __init__(self, *, own_node: str | None, prefix: str = "ron",
                 capacity: int = DEFAULT_CAPACITY,
                 counters: KernelCounters | None = None) -> None:
        self._own = own_node
        self._prefix = prefix
        self._bus: Bus[_Item] = Bus(capacity)
        self._nodes: OrderedDict[str, _NodeView] = OrderedDict()
        self._counters = counters
        self._rejected = dict.fromkeys(FEDERATION_REJECT_REASONS, 0)
        self._received = 0
        self._last_warned: dict[str, float] = {}

    @property
    def prefix(self) -> str:
        """The subject prefix this fleet reads (``<prefix>.>``)."""
        return self._prefix

    def subscribe(self) -> FleetReceiver:
        """A receiver of every remote event from now on."""
        return FleetReceiver(self._bus.subscribe())

    def close(self) -> None:
        """No more events: receivers drain what is left, then see ``Closed``."""
        self._bus.close()

    # ---------------------------------------------------------------- intake

    def receive(self, subject: str, data: bytes) -> RemoteEvent | None:
        """Take one raw message of ``<prefix>.>``; the accepted event, or ``None``. Never raises."""
        if self._own is not None:
            own = f"{self._prefix}.{self._own}."
            if subject.startswith(own):
                return None  # our own event, echoed by the server
        try:
            remote = decode(subject, data, self._prefix)
        except Rejected as why:
            self._reject(why, subject)
            return None
        self.accept(remote)
        return remote

    def accept(self, remote: RemoteEvent) -> None:
        """Record a decoded remote event and hand it to the receivers (a gap marker first)."""
        node, seq = remote.node, remote.seq
        nodes = self._nodes
        view = nodes.get(node)
        if view is None:
            # the first event heard from a node sets its baseline: joining late is no gap
            view = nodes[node] = _NodeView(seq)
            if len(nodes) > MAX_NODES:
                gone, _ = nodes.popitem(last=False)
                if self._counters is not None:
                    self._counters.federation_gaps_total.values.pop((gone,), None)
        else:
            nodes.move_to_end(node)
            expected = view.last_seq + 1
            if seq > expected:
                missed = seq - expected
                view.gaps += 1
                view.missed += missed
                if self._counters is not None:
                    self._counters.federation_gaps_total.inc(node, amount=missed)
                self._bus.publish(_Gap(node, missed))
            elif seq < expected:
                # seq went back: the node started again (seq restarts at 1 per process run)
                view.restarts += 1
        view.last_seq = seq
        view.events += 1
        view.last_event_at = time.time()
        view.last_ts = remote.ts
        view.last_type = type(remote.event).__name__
        self._received += 1
        if self._counters is not None:
            self._counters.federation_received_total.inc()
        self._bus.publish(remote)

    def _reject(self, why: Rejected, subject: str) -> None:
        self._rejected[why.reason] = self._rejected.get(why.reason, 0) + 1
        if self._counters is not None:
            self._counters.federation_rejected_total.inc(why.reason)
        now = time.monotonic()
        if now - self._last_warned.get(why.reason, -_REJECT_LOG_EVERY) >= _REJECT_LOG_EVERY:
            self._last_warned[why.reason] = now
            _log.warning("federation_message_rejected", reason=why.reason, detail=str(why),
                         subject=subject[:200], rejected=self._rejected[why.reason])

    # ---------------------------------------------------------------- reading

    def status(self) -> dict[str, Any]:
        """The fleet section of ``/status``: nodes seen, last event time, gaps, rejections."""
        now = time.time()
        nodes = {}
        for name, view in sorted(self._nodes.items()):
            nodes[name] = {
                "last_event_at": round(view.last_event_at, 3),
                "last_event_age_s": round(max(0.0, now - view.last_event_at), 3),
                "last_type": view.last_type,
                "last_seq": view.last_seq,
                "events": view.events,
                "gaps": view.gaps,
                "missed": view.missed,
                "restarts": view.restarts,
            }
        return {
            "nodes": nodes,
            "received": self._received,
            "rejected": {k: v for k, v in self._rejected.items() if v},
            "receivers": self._bus.receiver_count,
        }
