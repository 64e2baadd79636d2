"""The kernel's own counters: plain numbers every part writes, and ``Metrics`` reads at scrape.

A leaf module: it imports nothing from the rest of the package. Parts (bus, mailbox, supervisor,
health, config cell) write to a :class:`KernelCounters` through the ``counters`` attribute of
the :class:`~ron_kernel.Metrics` they were given; the exporter (``Metrics``) turns the numbers into
Prometheus families only when someone scrapes. Keeping ``prometheus_client`` off the write path
is what makes counting free on the hot paths (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Protocol


class BusStatsLike(Protocol):
    """What the exporter reads of a bus's statistics (``ron_kernel.bus.BusStats``)."""

    published: int
    no_receivers: int
    dropped: int
    lagged: int


class BusLike(Protocol):
    """A bus that can report its statistics."""

    def stats(self) -> BusStatsLike:
        """A point-in-time summary."""
        ...


class MailboxLike(Protocol):
    """A mailbox that can report its name, depth and capacity."""

    name: str

    @property
    def capacity(self) -> int:
        """Most messages it holds."""
        ...

    def __len__(self) -> int:
        """Messages waiting."""
        ...


# A modest bucket set (PERFORMANCE.md §4: too many buckets cost CPU and scrape size):
# 100 µs .. 10 s, the range of every kernel operation we time.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
)


FEDERATION_REJECT_REASONS = ("not_json", "oversized", "unknown_type", "bad_field",
                             "missing_field", "bad_subject", "subject_mismatch")
"""The ``reason`` label values of ``federation_rejected_total``."""

# Event-loop lag: 1 ms (timer jitter) .. 10 s (a loop that is stuck).
LOOP_LAG_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class LabeledCounter:
    """A counter family kept as a dict of plain numbers, one per label-value tuple."""

    __slots__ = ("help", "labelnames", "name", "values")

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...] = (),
                 preset: Iterable[tuple[str, ...]] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {key: 0.0 for key in preset}
        if not labelnames:
            self.values[()] = 0.0

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the series with these label values."""
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        """Current value of one series (0 when never touched)."""
        return self.values.get(labels, 0.0)

    def total(self) -> float:
        """Sum over every series."""
        return sum(self.values.values())


class LabeledGauge(LabeledCounter):
    """A gauge family kept as a dict of plain numbers."""

    __slots__ = ()

    def set(self, *labels: str, value: float) -> None:
        """Set the series with these label values."""
        self.values[labels] = value

    def remove(self, *labels: str) -> None:
        """Drop one series (e.g. a child that no longer exists)."""
        self.values.pop(labels, None)


class LabeledHistogram:
    """A histogram family with a fixed bucket set, kept as plain lists."""

    __slots__ = ("buckets", "help", "labelnames", "name", "series")

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...] = LATENCY_BUCKETS,
                 preset: Iterable[tuple[str, ...]] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self.buckets = buckets
        # per series: [count per bucket (+Inf last)], then sum
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        for key in preset:
            self._get(key)

    def _get(self, labels: tuple[str, ...]) -> tuple[list[int], list[float]]:
        entry = self.series.get(labels)
        if entry is None:
            entry = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        return entry

    def observe(self, *labels: str, value: float) -> None:
        """Record one observation (seconds) in the series with these label values."""
        counts, total = self._get(labels)
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def count(self, *labels: str) -> int:
        """How many observations the series holds."""
        entry = self.series.get(labels)
        return sum(entry[0]) if entry else 0


class KernelCounters:
    """Every series the kernel itself maintains (the golden set and the concurrency set).

    Kernel parts write here (``counters.service_restarts_total.inc("svc")``) through the
    :attr:`ron_kernel.Metrics.counters` of the metrics they were given; ``Metrics`` only reads,
    at scrape time. Buses and mailboxes register themselves (:meth:`attach_bus`,
    :meth:`attach_mailbox`) and are read through their public statistics. ``amnesia`` is the
    current value of the ``amnesia`` label.
    """

    def __init__(self, *, amnesia: bool = False) -> None:
        self.amnesia = amnesia
        # Weak references: a bus or mailbox that is garbage-collected stops being exported.
        self._buses: dict[int, weakref.ref[BusLike]] = {}
        self._mailboxes: dict[int, weakref.ref[MailboxLike]] = {}
        c, g, h = LabeledCounter, LabeledGauge, LabeledHistogram
        self.bus_receiver_lag_total = c(
            "bus_receiver_lag_total",
            "Missed messages reported through Bus.handle_recv or skipped by async iteration.")
        self.service_restarts_total = c(
            "service_restarts_total", "Restarts of supervised children.", ("service",))
        self.request_latency_seconds = h(
            "request_latency_seconds", "Latency of kernel operations.", ("op",),
            preset=[("config_reload",), ("bus_publish",), ("readyz",)])
        self.busy_rejections_total = c(
            "busy_rejections_total", "Sends rejected at once because a bounded queue was full.",
            ("queue",))
        self.queue_dropped_total = c(
            "queue_dropped_total", "Items a queue discarded (closed with items, or late replies).",
            ("queue",))
        self.tasks_spawned_total = c(
            "tasks_spawned_total", "Tasks the kernel started.", ("kind",))
        self.tasks_aborted_total = c(
            "tasks_aborted_total", "Tasks the kernel cancelled or abandoned at a deadline.",
            ("kind",))
        self.io_timeouts_total = c(
            "io_timeouts_total", "Operations that hit their deadline.", ("op",))
        self.backoff_retries_total = c(
            "backoff_retries_total", "Retries made after a backoff wait.", ("op",))
        self.readiness_degraded_total = c(
            "readiness_degraded_total", "Times readiness lost a prerequisite, by cause.",
            ("cause",), preset=[("pq_required_but_unavailable",)])
        self.config_reloads_total = c(
            "config_reloads_total", "Config reload attempts by outcome.", ("outcome",),
            preset=[("applied",), ("rejected",)])
        self.pq_handshake_total = c(
            "pq_handshake_total", "PQ postures reported by services (pass-through).",
            ("mode", "kex", "role"), preset=[("off", "x25519", "server")])
        self.pq_downgrade_events_total = c(
            "pq_downgrade_events_total",
            "Classical postures reported while PQ was required.", ("reason",),
            preset=[("classical_negotiated",)])
        self.pq_posture_missing_total = c(
            "pq_posture_missing_total", "Ready services that never reported a PQ posture.")
        self.supervisor_quarantined = g(
            "supervisor_quarantined", "1 while a supervised child is quarantined.", ("service",))
        self.supervisor_quarantine_probes_total = c(
            "supervisor_quarantine_probes_total",
            "Probe starts of quarantined children after their cool-down, by outcome.",
            ("service", "outcome"))
        self.config_version = g("config_version", "Version of the applied config snapshot.")
        self.events_unencodable_total = c(
            "events_unencodable_total",
            "Objects on the kernel bus that /events could not encode (skipped, not fatal).")
        # Loop health (ron_kernel._loop_health writes these; docs/METRICS.md).
        self.event_loop_lag_seconds = h(
            "event_loop_lag_seconds", "How late the event loop ran the lag sampler's timer.",
            (), buckets=LOOP_LAG_BUCKETS, preset=[()])
        self.event_loop_lag_max_seconds = g(
            "event_loop_lag_max_seconds", "Worst sampled event-loop lag over the last 60 s.")
        self.event_loop_blocked_total = c(
            "event_loop_blocked_total", "Times the event loop ran no callback for "
            "observability.loop_block_threshold.")
        self.event_loop_blocked_seconds_total = c(
            "event_loop_blocked_seconds_total", "Seconds the detected event-loop blocks lasted.")
        self.observer_errors_total = c(
            "observer_errors_total",
            "Reports (log line, event, readiness) that failed and were dropped; supervision "
            "went on.", ("observer",), preset=[("log",), ("bus",), ("health",)])
        self.control_requests_total = c(
            "control_requests_total",
            "Requests to /control/* by action (release, restart, reload) and outcome (ok, "
            "unauthorized, not_found, conflict, too_large, disabled, rejected, not_allowed, "
            "timeout, shutting_down, unavailable).", ("action", "outcome"))
        # Federation (the nats extra, docs/FEDERATION.md). federation_connected has a series only
        # on a kernel with federation configured: no "down" alert on kernels without it.
        self.federation_connected = g(
            "federation_connected", "1 while the kernel is connected to its NATS server.")
        self.federation_connected.values.clear()
        self.federation_published_total = c(
            "federation_published_total", "Local KernelEvents handed to NATS.")
        self.federation_dropped_total = c(
            "federation_dropped_total",
            "Local KernelEvents never handed to NATS (buffer full, NATS away, bus lag).")
        self.federation_received_total = c(
            "federation_received_total", "Remote KernelEvents accepted into the fleet view.")
        self.federation_rejected_total = c(
            "federation_rejected_total", "Malformed messages on the federation subjects, dropped.",
            ("reason",), preset=[(r,) for r in FEDERATION_REJECT_REASONS])
        self.federation_gaps_total = c(
            "federation_gaps_total", "Remote events missed: gaps in a node's seq.", ("node",))
        # worker processes (docs/WORKERS.md): every series labelled by pool and worker index
        worker = ("pool", "worker")
        self.worker_ready = g(
            "worker_ready", "1 while a worker process reports ready, else 0.", worker)
        self.worker_events_relayed_total = c(
            "worker_events_relayed_total",
            "Events of a worker's children republished on this kernel's bus.", worker)
        self.worker_events_lost_total = c(
            "worker_events_lost_total",
            "Events a worker dropped because it fell behind or its channel was full.", worker)
        self.worker_scrape_timeouts_total = c(
            "worker_scrape_timeouts_total",
            "Scrapes a worker did not answer in time (its last series were served).", worker)
        self.worker_metrics_age_seconds = g(
            "worker_metrics_age_seconds",
            "Age of the worker series served by the last scrape (0: fresh).", worker)
        self.worker_kills_total = c(
            "worker_kills_total", "Worker processes this kernel killed, by reason.",
            (*worker, "reason"))
        self.worker_config_rounds_total = c(
            "worker_config_rounds_total",
            "Config reloads sent to a pool's workers, by outcome.", ("pool", "outcome"))

    def families(self) -> Iterator[LabeledCounter | LabeledHistogram]:
        """Every family except the bus's own, in export order."""
        for value in vars(self).values():
            if (isinstance(value, LabeledCounter | LabeledHistogram)
                    and value is not self.bus_receiver_lag_total):
                yield value

    # ------------------------------------------------------------------ sources read at scrape

    def attach_bus(self, bus: BusLike) -> None:
        """Export ``bus.stats()`` in the ``bus_*`` series while the bus is alive."""
        _remember(self._buses, bus)

    def attach_mailbox(self, mailbox: MailboxLike) -> None:
        """Export ``len(mailbox)`` as ``queue_depth{queue=mailbox.name}`` (and its capacity as
        ``queue_capacity``) while it is alive."""
        _remember(self._mailboxes, mailbox)

    def buses(self) -> list[BusLike]:
        """The attached buses still alive (a copy: safe to call from a scrape thread)."""
        return [b for b in (ref() for ref in list(self._buses.values())) if b is not None]

    def mailboxes(self) -> list[MailboxLike]:
        """The attached mailboxes still alive (a copy: safe to call from a scrape thread)."""
        return [m for m in (ref() for ref in list(self._mailboxes.values())) if m is not None]


def _remember(table: dict[int, weakref.ref[Any]], obj: Any) -> None:
    key = id(obj)

    def forget(_: weakref.ref[Any]) -> None:
        table.pop(key, None)

    table[key] = weakref.ref(obj, forget)
