"""Metrics: the exporter. A private Prometheus registry per kernel that reads plain counters.

Kernel parts write plain numbers into a :class:`~ron_kernel._counters.KernelCounters`
(``metrics.counters``); a custom collector turns them, and the statistics of the attached buses
and mailboxes, into Prometheus families only when someone scrapes (``render()`` or
``/metrics``). That keeps ``prometheus_client`` off the per-message hot path (see
docs/PERFORMANCE.md for the measured difference) and lets every kernel series carry the current
``amnesia`` label. Nothing here writes into another part.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence

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

from ._counters import KernelCounters, LabeledGauge, LabeledHistogram
from ._exposition import merge
from ._health import HealthState
from ._http import Handler, serve_metrics
from ._version import __version__

ScrapeSource = Callable[[], Awaitable[Sequence[str]]]
"""An async source of more exposition text for each scrape (worker processes' series)."""


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

    registry: CollectorRegistry
    """This kernel's own Prometheus registry: register your service's metrics here."""

    def __init__(self, *, amnesia: bool = False, health: HealthState | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._counters = KernelCounters(amnesia=amnesia)
        self._served = False
        self._runtime_flavor = _running_flavor() or "unknown"
        self._health = health if health is not None else HealthState(amnesia=amnesia)
        self._health.attach_counters(self._counters)
        # (sample name, labels) -> 'name{labels} ' : label strings are escaped once, not per scrape
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._collector = _KernelCollector(self)
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)
        self._sources: list[ScrapeSource] = []

    @property
    def health(self) -> HealthState:
        """The :class:`HealthState` that ``/readyz`` reports."""
        return self._health

    @property
    def counters(self) -> KernelCounters:
        """The kernel's own series as plain numbers (what kernel parts write, read at scrape).

        ``m.counters.service_restarts_total.get("svc")`` reads one series without rendering;
        tests and embedders read it, kernel parts write it. Register your own metrics on
        :attr:`registry` instead of adding families here.
        """
        return self._counters

    @property
    def amnesia(self) -> bool:
        """Whether amnesia mode is on (the ``amnesia`` label of every kernel series)."""
        return self._counters.amnesia

    def set_amnesia(self, on: bool) -> None:
        """Switch the ``amnesia`` label (and the readiness snapshot's field) at runtime.

        The kernel calls this when a reload flips ``amnesia.enabled``.
        """
        self._counters.amnesia = bool(on)
        self._health.set_amnesia(on)

    def render(self) -> bytes:
        """Return the Prometheus text exposition (format 0.0.4) of everything registered.

        Synchronous. The kernel's own series are written by a direct text writer (cached label
        strings; its time at 2,000 series is in docs/PERFORMANCE.md, Targets); other collectors
        on ``registry`` (process metrics, your own) go through ``prometheus_client``.
        ``/metrics`` runs that second part in a worker thread.
        """
        flavor = _running_flavor()
        if flavor is not None:
            self._runtime_flavor = flavor
        return self.render_kernel_text().encode() + self.render_others()

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

    # ------------------------------------------------------------- scrape sources

    def add_scrape_source(self, source: ScrapeSource) -> Callable[[], None]:
        """Merge what ``source()`` returns into every ``/metrics`` scrape; returns a remover.

        ``source`` is an async callable returning exposition texts (format 0.0.4) -- the kernel
        registers one per worker pool, answering with each worker's series. The texts are
        merged family by family with this process's own (:meth:`scrape_text`). A source bounds
        its own time; one that raises is skipped and counted
        (``observer_errors_total{observer="scrape_source"}``). While a source is registered
        ``/metrics`` answers in the text format 0.0.4 whatever the ``Accept`` header asks.
        """
        self._sources.append(source)

        def remove() -> None:
            if source in self._sources:
                self._sources.remove(source)

        return remove

    @property
    def has_scrape_sources(self) -> bool:
        """Whether any scrape source is registered (see :meth:`add_scrape_source`)."""
        return bool(self._sources)

    async def scrape_text(self) -> bytes:
        """What ``/metrics`` serves in the text format: :meth:`render` plus every source.

        The kernel series are written on the loop, the other collectors in a worker thread,
        the sources are awaited together; families that several texts share appear once.
        """
        flavor = _running_flavor()
        if flavor is not None:
            self._runtime_flavor = flavor
        own = self.render_kernel_text().encode() + await asyncio.to_thread(self.render_others)
        if not self._sources:
            return own
        found = await asyncio.gather(*(source() for source in list(self._sources)),
                                     return_exceptions=True)
        texts = [own.decode()]
        for result in found:
            if isinstance(result, BaseException):
                self._counters.observer_errors_total.inc("scrape_source")
                continue
            texts.extend(result)
        return merge(texts).encode()

    # ------------------------------------------------------------- rendering

    def render_kernel_text(self) -> str:
        """The kernel series in text format 0.0.4, byte-identical to generate_latest's output."""
        flavor = _running_flavor()
        if flavor is not None:
            self._runtime_flavor = flavor
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

    def render_others(self) -> bytes:
        """generate_latest over every collector of ``registry`` except the kernel's."""
        _skip_kernel.active = True
        try:
            return generate_latest(self.registry)
        finally:
            _skip_kernel.active = False

    def collect_others(self) -> list[Metric]:
        """The families of every collector of ``registry`` except the kernel's (what
        :meth:`render_others` renders), for a writer of one's own (a worker process's)."""
        _skip_kernel.active = True
        try:
            return list(self.registry.collect())
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
        counters = m.counters
        amnesia = "on" if counters.amnesia else "off"
        out: list[Metric] = []

        info = InfoMetricFamily(
            "ron_kernel", "Kernel build and runtime; join on it for version and runtime_flavor.",
            labels=("version", "runtime_flavor", "amnesia"))
        info.add_metric((__version__, m._runtime_flavor, amnesia), {})
        out.append(info)

        stats = [bus.stats() for bus in counters.buses()]
        reported = counters.bus_receiver_lag_total
        bus_series = (
            ("bus_published_total", "Messages published on the bus (with or without receivers).",
             sum(s.published for s in stats)),
            ("bus_no_receivers_total", "Publishes that found no receiver.",
             sum(s.no_receivers for s in stats)),
            ("bus_dropped_total", "Publishes refused because the bus was closed.",
             sum(s.dropped for s in stats)),
            ("bus_lagged_total", "Messages receivers missed because they fell behind (overflow).",
             sum(s.lagged for s in stats)),
            (reported.name, reported.help, reported.get()),
        )
        for name, doc, value in bus_series:
            bus_family = CounterMetricFamily(name, doc, labels=("amnesia",))
            bus_family.add_metric((amnesia,), value)
            out.append(bus_family)

        depth = GaugeMetricFamily("queue_depth", "Items waiting in a mailbox (sampled at scrape).",
                                  labels=("queue", "amnesia"))
        capacity = GaugeMetricFamily(
            "queue_capacity", "Most items a mailbox holds (queue_depth / queue_capacity is how "
            "full it is).", labels=("queue", "amnesia"))
        depths: dict[str, int] = {}
        capacities: dict[str, int] = {}
        for mailbox in counters.mailboxes():
            depths[mailbox.name] = depths.get(mailbox.name, 0) + len(mailbox)
            capacities[mailbox.name] = capacities.get(mailbox.name, 0) + mailbox.capacity
        for queue, value in sorted(depths.items()):
            depth.add_metric((queue, amnesia), value)
            capacity.add_metric((queue, amnesia), capacities[queue])
        out.append(depth)
        out.append(capacity)

        # Readiness as a series (what /readyz answers, read through HealthState's public API
        # at scrape), so "not ready for 5 minutes" is an alert rule.
        ready = GaugeMetricFamily(
            "kernel_ready", "1 while /readyz would answer 200 (every prerequisite and service "
            "ready), else 0.", labels=("amnesia",))
        ready.add_metric((amnesia,), 1.0 if m.health.all_ready() else 0.0)
        out.append(ready)

        for family in counters.families():
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


# Set in the thread rendering "everything but the kernel series" (see Metrics.render_others).
_skip_kernel = threading.local()


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _bound(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(value)
