"""Metrics: a private Prometheus registry per kernel, fed by plain counters.

Kernel counters are plain Python ints and dicts updated in place; a custom collector turns them
into Prometheus families only when someone scrapes (``render()`` or ``/metrics``). That keeps
``prometheus_client`` off the per-message hot path (see docs/PERFORMANCE.md for the measured
difference) and lets every kernel series carry the current ``amnesia`` label.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ._health import HealthState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from aiohttp import web

    from ._bus import Bus

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# A modest bucket set (PERFORMANCE.md §4: too many buckets cost CPU and scrape size):
# 100 µs .. 10 s, the range of every kernel operation we time.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
)
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


class KernelMetrics:
    """Every series the kernel itself maintains (the golden set and the concurrency set).

    Kernel parts update these directly; :class:`Metrics` exports them.
    """

    def __init__(self) -> None:
        c, g, h = LabeledCounter, LabeledGauge, LabeledHistogram
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
        self.config_version = g("config_version", "Version of the applied config snapshot.")
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

    def families(self) -> Iterator[LabeledCounter | LabeledHistogram]:
        """Every family, in export order."""
        for value in vars(self).values():
            if isinstance(value, LabeledCounter | LabeledHistogram):
                yield value


class Metrics:
    """The kernel's metrics: a private Prometheus registry plus the kernel's own series.

    Each instance has its own ``prometheus_client.CollectorRegistry`` (``m.registry``), so two
    kernels in one process, or two tests, never see each other's numbers. Register your own
    service metrics on ``m.registry`` to have them served on the same ``/metrics``. The registry
    also holds the process metrics (``process_resident_memory_bytes``, ``process_open_fds``,
    ``process_cpu_seconds_total``, ... where the platform has them).

    Every kernel series carries ``amnesia="on"|"off"``; the kernel ``version`` and the
    ``runtime_flavor`` (``asyncio`` or ``uvloop``) are labels of the single info series
    ``ron_kernel_info`` (the ``target_info`` pattern; see docs/OBSERVABILITY.md).
    """

    def __init__(self, *, amnesia: bool = False, health: HealthState | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._amnesia = amnesia
        self._kernel = KernelMetrics()
        self._buses: list[Bus[Any]] = []
        # id -> weak reference; plain dict so a scrape in a worker thread can copy it atomically
        self._mailboxes: dict[int, weakref.ref[Any]] = {}
        self._receiver_lag_total = 0
        self._served = False
        self._runtime_flavor = _running_flavor() or "unknown"
        self._health = health if health is not None else HealthState(amnesia=amnesia)
        self._health._bind_metrics(self)
        # (sample name, labels) -> 'name{labels} ' : label strings are escaped once, not per scrape
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._collector = _KernelCollector(self)
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)

    @property
    def health(self) -> HealthState:
        """The :class:`HealthState` that ``/readyz`` reports."""
        return self._health

    @property
    def amnesia(self) -> bool:
        """Whether amnesia mode is on (the ``amnesia`` label of every kernel series)."""
        return self._amnesia

    def render(self) -> bytes:
        """Return the Prometheus text exposition (format 0.0.4) of everything registered.

        Synchronous. The kernel's own series are written by a direct text writer (about 1 ms at
        2,000 series, cached label strings); other collectors on ``registry`` (process metrics,
        your own) go through ``prometheus_client``. ``/metrics`` runs that second part in a
        worker thread.
        """
        flavor = _running_flavor()
        if flavor is not None:
            self._runtime_flavor = flavor
        return self._kernel_text().encode() + self._render_others()

    async def serve(
        self,
        addr: str | tuple[str, int],
        *,
        extra_routes: Sequence[tuple[str, str, Handler]] = (),
        allow_unspecified: bool = False,
        retry_after: int = 5,
        read_timeout: float = 5.0,
    ) -> tuple[asyncio.Task[None], tuple[str, int]]:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP in the running loop.

        ``addr`` is ``"host:port"`` (``"[::1]:port"`` for IPv6) or ``(host, port)``; port 0 picks
        a free port. Returns ``(task, (host, port))`` with the port actually bound; the task runs
        until cancelled, then closes the listener. Signals are left alone.

        ``extra_routes`` adds ``(method, path, handler)`` entries (aiohttp handlers) to the same
        server: the hook the kernel uses for ``GET /status`` and ``GET /events``.
        Binding an unspecified address (``0.0.0.0``, ``::``) raises ``ValueError`` unless
        ``allow_unspecified=True``. A bad ``addr`` raises ``ValueError`` naming it. Consumes the
        object: a second call raises ``RuntimeError``. See docs/OBSERVABILITY.md for status codes.
        """
        if self._served:
            raise RuntimeError("Metrics.serve() was already called on this Metrics object")
        from ._http import serve_metrics

        flavor = _running_flavor()
        if flavor is not None:
            self._runtime_flavor = flavor
        self._served = True
        try:
            return await serve_metrics(
                self, addr, extra_routes=extra_routes, allow_unspecified=allow_unspecified,
                retry_after=retry_after, read_timeout=read_timeout)
        except BaseException:
            # a refused addr did not consume the object
            self._served = False
            raise

    # ------------------------------------------------------------- package-internal hooks

    def _set_amnesia(self, on: bool) -> None:
        self._amnesia = on
        self._health._amnesia = on

    def _attach_bus(self, bus: Bus[Any]) -> None:
        self._buses.append(bus)

    def _attach_mailbox(self, mailbox: Any) -> None:
        key = id(mailbox)
        mailboxes = self._mailboxes

        def forget(_: weakref.ref[Any]) -> None:
            mailboxes.pop(key, None)

        mailboxes[key] = weakref.ref(mailbox, forget)

    def _receiver_lag(self, missed: int) -> None:
        self._receiver_lag_total += missed

    def _kernel_text(self) -> str:
        """The kernel series in text format 0.0.4, byte-identical to generate_latest's output."""
        collector = self._collector
        out: list[str] = []
        prefixes = self._prefixes
        for family in collector.collect():
            name = family.name
            kind = family.type
            if kind == "counter":
                exposed, kind_text = name + "_total", "counter"
            elif kind == "info":
                exposed, kind_text = name + "_info", "gauge"
            else:
                exposed, kind_text = name, kind
            out.append(f"# HELP {exposed} {_escape_help(family.documentation)}\n"
                       f"# TYPE {exposed} {kind_text}\n")
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                prefix = prefixes.get(key)
                if prefix is None:
                    if len(prefixes) > 100_000:  # label churn: do not grow without bound
                        prefixes.clear()
                    labels = ",".join(f'{k}="{_escape_label(v)}"'
                                      for k, v in sorted(sample.labels.items()))
                    prefix = prefixes[key] = (
                        f"{sample.name}{{{labels}}} " if labels else f"{sample.name} ")
                out.append(f"{prefix}{floatToGoString(sample.value)}\n")  # type: ignore[no-untyped-call]
        return "".join(out)

    def _render_others(self) -> bytes:
        """generate_latest over every collector of ``registry`` except the kernel's."""
        _skip_kernel.active = True
        try:
            return generate_latest(self.registry)
        finally:
            _skip_kernel.active = False


def _running_flavor() -> str | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class _KernelCollector(Collector):
    """Turns the plain counters of a :class:`Metrics` into Prometheus families at scrape time.

    Safe to run in a worker thread while the loop keeps counting: every container is first
    copied with one C-level call (atomic under the GIL), then read from the copy.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = weakref.ref(metrics)

    def collect(self) -> Iterable[Metric]:
        m = self._metrics()
        if m is None or getattr(_skip_kernel, "active", False):
            return []
        from . import __version__

        amnesia = "on" if m._amnesia else "off"
        out: list[Metric] = []

        info = InfoMetricFamily(
            "ron_kernel", "Kernel build and runtime; join on it for version and runtime_flavor.",
            labels=("version", "runtime_flavor", "amnesia"))
        info.add_metric((__version__, m._runtime_flavor, amnesia), {})
        out.append(info)

        buses = list(m._buses)
        bus_series = (
            ("bus_published_total", "Messages published on the bus (with or without receivers).",
             sum(b._published for b in buses)),
            ("bus_no_receivers_total", "Publishes that found no receiver.",
             sum(b._no_receivers for b in buses)),
            ("bus_dropped_total", "Publishes refused because the bus was closed.",
             sum(b._dropped for b in buses)),
            ("bus_lagged_total", "Messages receivers missed because they fell behind (overflow).",
             sum(b._lagged for b in buses)),
            ("bus_receiver_lag_total",
             "Missed messages reported through Bus.handle_recv or skipped by async iteration.",
             m._receiver_lag_total),
        )
        for name, doc, value in bus_series:
            bus_family = CounterMetricFamily(name, doc, labels=("amnesia",))
            bus_family.add_metric((amnesia,), value)
            out.append(bus_family)

        depth = GaugeMetricFamily("queue_depth", "Items waiting in a mailbox (sampled at scrape).",
                                  labels=("queue", "amnesia"))
        depths: dict[str, int] = {}
        for ref in list(m._mailboxes.values()):
            mailbox = ref()
            if mailbox is not None:
                depths[mailbox.name] = depths.get(mailbox.name, 0) + len(mailbox)
        for queue, value in sorted(depths.items()):
            depth.add_metric((queue, amnesia), value)
        out.append(depth)

        for family in m._kernel.families():
            labels = (*family.labelnames, "amnesia")
            if isinstance(family, LabeledHistogram):
                hist = HistogramMetricFamily(family.name, family.help, labels=labels)
                for key, (counts, total) in sorted(family.series.copy().items()):
                    running = 0.0
                    buckets: list[tuple[str, float]] = []
                    for bound, n in zip((*family.buckets, float("inf")), list(counts),
                                        strict=True):
                        running += n
                        buckets.append((_bound(bound), running))
                    hist.add_metric((*key, amnesia), buckets, total[0])
                out.append(hist)
                continue
            name = family.name
            if isinstance(family, LabeledGauge):
                fam: GaugeMetricFamily | CounterMetricFamily = GaugeMetricFamily(
                    name, family.help, labels=labels)
            else:
                fam = CounterMetricFamily(name, family.help, labels=labels)
            for key, number in sorted(family.values.copy().items()):
                fam.add_metric((*key, amnesia), number)
            out.append(fam)
        return out


# Set in the thread rendering "everything but the kernel series" (see Metrics._render_others).
_skip_kernel = threading.local()


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _bound(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(value)
