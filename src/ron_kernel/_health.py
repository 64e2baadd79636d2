"""HealthState: per-service readiness plus the kernel's own prerequisites."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ._counters import KernelCounters
from ._events import KernelEvent
from ._logging import get_logger

PQ_MODES = ("off", "hybrid", "pq-only")
"""The PQ policies of config ``pq.mode`` (the one list; config validates against it)."""
# Postures a service may report; "classical" means no PQ key exchange was negotiated.
PQ_POSTURES = ("classical", "hybrid", "pq-only")
# Strength order of postures: a posture satisfies a policy when its rank reaches the policy's.
_PQ_RANK = {"classical": 0, "off": 0, "hybrid": 1, "pq-only": 2}

PQ_UNAVAILABLE = "pq_required_but_unavailable"

_log = get_logger("health")


class Publisher(Protocol):
    """Where readiness changes are published (a ``Bus[KernelEvent]``)."""

    def publish(self, msg: KernelEvent, /) -> int:
        """Publish one event; never blocks."""
        ...


class HealthState:
    """Readiness of the process: every registered service ready, every prerequisite met.

    Services report with :meth:`set`. The kernel adds prerequisites that must be
    :meth:`satisfy`-ed, marks quarantined children (:meth:`quarantine`), and applies the PQ policy
    (:meth:`configure_pq`, :meth:`report_pq_posture`). :meth:`all_ready` is ``False`` while nothing
    is registered.

    A bare ``HealthState()`` has no prerequisites: it is ready once every service it knows is
    ready. The kernel builds its own with ``prerequisites=("config", "bus_attached")`` and
    satisfies them as it starts; pass ``prerequisites=`` (or call :meth:`require`) to do the same.

    Every change is O(1) in the number of services (a PQ policy change re-checks the reported
    postures once), never blocks and never awaits. When a bus is attached (:meth:`attach_bus`),
    each change of a service's readiness publishes ``KernelEvent.Health(service, ok)``.

    Example::

        h = HealthState(prerequisites=("config",))
        h.set("svc-a", True)
        h.missing()        # ["config"]
        h.satisfy("config")
        h.all_ready()      # True
    """

    def __init__(self, *, amnesia: bool = False, pq_mode: str = "off", pq_required: bool = False,
                 prerequisites: Iterable[str] = ()) -> None:
        if pq_mode not in PQ_MODES:
            raise ValueError(f"pq_mode must be one of {PQ_MODES}, got {pq_mode!r}")
        self._services: dict[str, bool] = {}
        self._not_ready = 0
        self._unmet: dict[str, None] = dict.fromkeys(prerequisites)
        self._quarantined: dict[str, None] = {}
        self._pq_posture: dict[str, str] = {}
        # services whose reported posture is weaker than the policy asks (only while required)
        self._pq_short: dict[str, None] = {}
        self._amnesia = amnesia
        self._pq_mode = pq_mode
        self._pq_required = bool(pq_required)
        self._bus: Publisher | None = None
        self._counters: KernelCounters | None = None

    # ------------------------------------------------------------------ services

    def set(self, service: str, ok: bool) -> None:
        """Record whether ``service`` is ready. Registers it on first use.

        O(1), never blocks. A change publishes ``KernelEvent.Health`` on the attached bus. A
        service turning ready while PQ is required, without having reported its posture, counts
        ``pq_posture_missing_total``.
        """
        ok = bool(ok)
        previous = self._services.get(service)
        if previous is ok:
            return
        self._services[service] = ok
        if previous is None:
            self._not_ready += 0 if ok else 1
        else:
            self._not_ready += -1 if ok else 1
        if not ok:
            self._degraded("service")
        elif self._pq_required and service not in self._pq_posture:
            self._posture_missing(service)
        self._publish(service, ok)

    def remove(self, service: str) -> None:
        """Forget ``service`` (it no longer counts for readiness, nor its PQ posture)."""
        ok = self._services.pop(service, None)
        if ok is False:
            self._not_ready -= 1
        self._pq_posture.pop(service, None)
        self._pq_short.pop(service, None)

    # ------------------------------------------------------------------ kernel prerequisites

    def require(self, prerequisite: str) -> None:
        """Add a prerequisite (e.g. ``"config"``) that must be met before the process is ready."""
        self._unmet.setdefault(prerequisite, None)

    def satisfy(self, prerequisite: str, ok: bool = True) -> None:
        """Mark a prerequisite met (``ok=True``) or unmet again (``ok=False``)."""
        if ok:
            self._unmet.pop(prerequisite, None)
        elif prerequisite not in self._unmet:
            self._unmet[prerequisite] = None
            self._degraded(prerequisite)

    def attach_bus(self, bus: Publisher) -> None:
        """Publish ``KernelEvent.Health`` on ``bus`` from now on; satisfies ``"bus_attached"``."""
        self._bus = bus
        self.satisfy("bus_attached")

    @property
    def bus(self) -> Publisher | None:
        """Where readiness changes are published (``None`` until :meth:`attach_bus`)."""
        return self._bus

    def attach_counters(self, counters: KernelCounters) -> None:
        """Count readiness and PQ events into ``counters`` (``Metrics`` does this for you)."""
        self._counters = counters

    def set_amnesia(self, on: bool) -> None:
        """Set the ``amnesia`` field of :meth:`snapshot` (a reload may flip it)."""
        self._amnesia = bool(on)

    def quarantine(self, service: str, on: bool = True) -> None:
        """Mark ``service`` quarantined (readiness degrades) or released (``on=False``)."""
        if on:
            if service not in self._quarantined:
                self._quarantined[service] = None
                self._degraded("quarantined")
        else:
            self._quarantined.pop(service, None)

    # ------------------------------------------------------------------ PQ posture (pass-through)

    def configure_pq(self, mode: str, required: bool) -> None:
        """Apply the PQ policy of the config (``pq.mode``, ``pq.require_pq``).

        With ``required`` on, a service is acceptable when its reported posture is at least as
        strong as ``mode`` (``classical`` < ``hybrid`` < ``pq-only``; with ``mode="off"`` any PQ
        posture will do). Turning the requirement on re-checks every reported posture once and
        counts ``pq_posture_missing_total`` for each ready service that never reported one.
        """
        if mode not in PQ_MODES:
            raise ValueError(f"pq.mode must be one of {PQ_MODES}, got {mode!r}")
        was_ok = self._pq_ok()
        newly_required = bool(required) and not self._pq_required
        self._pq_mode = mode
        self._pq_required = bool(required)
        self._pq_short = {
            service: None for service, posture in self._pq_posture.items()
            if self._pq_required and not self._posture_enough(posture)
        }
        if newly_required:
            for service, ok in self._services.items():
                if ok and service not in self._pq_posture:
                    self._posture_missing(service)
        if was_ok and not self._pq_ok():
            self._degraded(PQ_UNAVAILABLE)

    def report_pq_posture(self, service: str, posture: str, *, kex: str = "x25519",
                          role: str = "server") -> None:
        """Record the PQ posture ``service`` negotiated: ``classical``, ``hybrid`` or ``pq-only``.

        This is the one call services make; the kernel does no crypto and only records what the
        service says. It counts ``pq_handshake_total{mode,kex,role}``. With ``require_pq`` on, a
        posture weaker than the policy degrades readiness with ``pq_required_but_unavailable``,
        counts ``pq_downgrade_events_total{reason="<posture>_negotiated"}`` and logs
        ``pq_downgrade_detected``. A later, strong enough report clears it. O(1).

        Raises ``ValueError`` naming the value when ``posture`` is not one of the three.
        """
        if posture not in PQ_POSTURES:
            raise ValueError(f"PQ posture must be one of {PQ_POSTURES}, got {posture!r}")
        self._pq_posture[service] = posture
        counters = self._counters
        if counters is not None:
            mode = "off" if posture == "classical" else posture
            counters.pq_handshake_total.inc(mode, kex, role)
        if not self._pq_required or self._posture_enough(posture):
            self._pq_short.pop(service, None)
            return
        was_ok = self._pq_ok()
        self._pq_short[service] = None
        reason = f"{posture.replace('-', '_')}_negotiated"
        if counters is not None:
            counters.pq_downgrade_events_total.inc(reason)
        _log.warning(
            "pq_downgrade_detected", reason=PQ_UNAVAILABLE, peer=service,
            required=self._pq_mode, negotiated=posture, kex=kex, role=role)
        if was_ok:
            self._degraded(PQ_UNAVAILABLE)

    # ------------------------------------------------------------------ queries

    def all_ready(self) -> bool:
        """True when at least one service is registered and nothing is missing. O(1)."""
        return (
            bool(self._services)
            and not self._not_ready
            and not self._unmet
            and not self._quarantined
            and self._pq_ok()
        )

    def missing(self) -> list[str]:
        """Why the process is not ready: stable, human-readable reasons (empty when ready).

        In order: unmet prerequisites (``"config"``, ``"bus_attached"``), ``"no_services"``,
        ``"service:<name>"``, ``"quarantined:<name>"``, ``"pq_required_but_unavailable"``.
        """
        if self.all_ready():
            return []
        reasons = list(self._unmet)
        if not self._services:
            reasons.append("no_services")
        if self._not_ready:
            reasons.extend(f"service:{name}" for name, ok in self._services.items() if not ok)
        reasons.extend(f"quarantined:{name}" for name in self._quarantined)
        if not self._pq_ok():
            reasons.append(PQ_UNAVAILABLE)
        return reasons

    def snapshot(self) -> Mapping[str, Any]:
        """Return a JSON-ready view.

        Keys: ``services`` (name -> bool), ``ready``, ``missing``, ``amnesia`` (``"on"|"off"``),
        ``pq_mode``, ``pq_required``, ``pq_posture`` (name -> reported posture).
        """
        missing = self.missing()
        return {
            "services": dict(self._services),
            "ready": not missing,
            "missing": missing,
            "amnesia": "on" if self._amnesia else "off",
            "pq_mode": self._pq_mode,
            "pq_required": self._pq_required,
            "pq_posture": dict(self._pq_posture),
        }

    def __repr__(self) -> str:
        return f"HealthState(ready={self.all_ready()}, missing={self.missing()!r})"

    # ------------------------------------------------------------------ internals

    def _pq_ok(self) -> bool:
        return not (self._pq_required and self._pq_short)

    def _posture_enough(self, posture: str) -> bool:
        # mode "off" with require_pq still asks for *some* PQ: hybrid at least
        needed = max(_PQ_RANK[self._pq_mode], 1)
        return _PQ_RANK[posture] >= needed

    def _posture_missing(self, service: str) -> None:
        if self._counters is not None:
            self._counters.pq_posture_missing_total.inc()
        _log.warning("pq_posture_missing", reason="pq_posture_missing", peer=service)

    def _degraded(self, cause: str) -> None:
        if self._counters is not None:
            self._counters.readiness_degraded_total.inc(cause)

    def _publish(self, service: str, ok: bool) -> None:
        bus = self._bus
        if bus is None:
            return
        event = KernelEvent.Health(service=service, ok=ok)
        counters = self._counters
        if counters is None:
            bus.publish(event)
            return
        # The kernel's own publishes are the sampled source of request_latency_seconds{op=
        # "bus_publish"}: readiness changes are rare, so timing them costs nothing, and the
        # per-message path of services stays untouched (docs/DECISIONS.md, Observability).
        start = time.perf_counter()
        bus.publish(event)
        counters.request_latency_seconds.observe(
            "bus_publish", value=time.perf_counter() - start)
