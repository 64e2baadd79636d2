"""The implementation behind :mod:`ron_kernel.kernel` (the public facade documents it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any, Generic, cast

from ._app_config import check_model as check_app_model
from ._appspec import spec_of
from ._bus import Bus
from ._config import Config, M
from ._config_cell import ConfigCell
from ._control import control_routes
from ._events import KernelEvent
from ._exitcodes import EXIT_INTERRUPTED
from ._federation import Federation
from ._fleet import Fleet
from ._health import HealthState
from ._kernel_http import debug_tasks_handler, events_handler, status_handler
from ._listen import ListenSockets
from ._logging import configure_from_config, get_logger, loop_exception_handler
from ._loop_health import LoopHealth
from ._metrics import Metrics
from ._plain_signals import exit_now, in_main_thread, install_plain
from ._signals import wait_for_ctrl_c
from ._snapshot import model_spec
from ._supervisor import Supervisor
from ._supervisor_child import ChildContext, current_child
from ._supervisor_policy import RestartType
from ._ui import ui_routes
from ._workers import WorkerPool

__all__ = ["EXIT_SECOND_SIGNAL", "STREAM_FLUSH_GRACE", "Kernel"]

EXIT_SECOND_SIGNAL = EXIT_INTERRUPTED
"""Exit status when a second Ctrl-C/SIGTERM arrives while the kernel drains (130)."""

STREAM_FLUSH_GRACE = 1.0
"""Seconds ``/events`` clients get to receive the last events once the bus is closed."""

_log = get_logger("kernel")
_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
OVERSUBSCRIBED = 4
"""``workers.count`` above this many per CPU logs the warning ``workers_oversubscribed``."""


class Kernel(Generic[M]):
    """The composition of every kernel part, from one validated :class:`~ron_kernel.Config`.

    It owns a :class:`~ron_kernel.config.ConfigCell` (reload on SIGHUP, file change or call),
    a ``Bus[KernelEvent]``, :class:`~ron_kernel.Metrics` with its
    :class:`~ron_kernel.HealthState` (which requires ``config`` and ``bus_attached``), the root
    :class:`~ron_kernel.supervisor.Supervisor`, the logging setup and, when
    ``observability.expose_http`` is on, the HTTP server (``/metrics``, ``/healthz``,
    ``/readyz``, ``/status``, ``/events``, the status page ``/ui``).

    With ``config=None`` the config is loaded from ``path``/``env``/``argv`` exactly like
    :meth:`Config.load`; reloads recompute it from the same sources. Pass a ``Config`` to use it
    as the first snapshot (reloads still read ``path``/``env``/``argv``, default: the default
    sources).
    """

    bus: Bus[KernelEvent]
    """The kernel bus: every ``KernelEvent`` (subscribe for your own consumers)."""
    metrics: Metrics
    """Metrics and the ``/metrics``, ``/healthz``, ``/readyz`` server."""
    health: HealthState
    """Readiness (``metrics.health``)."""
    supervisor: Supervisor
    """The root supervisor (``release``, ``snapshot``, ``add``)."""
    config_cell: ConfigCell[M]
    """The current config and its reload triggers."""
    http_addr: tuple[str, int] | None
    """``(host, port)`` actually bound, once the HTTP server is up."""
    listeners: ListenSockets
    """The named listening sockets (:meth:`listen`), shared with children and workers."""
    fleet: Fleet
    """The other kernels' events (``federation.nats_url``): ``fleet.subscribe()`` gives
    ``(node, KernelEvent)`` pairs. Kept apart from :attr:`bus`; empty without federation."""

    def __init__(self, config: Config[M] | None = None, *,
                 app_config: type[M] | None = None,
                 path: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None,
                 argv: Sequence[str] | None = None,
                 watch_config: bool = True,
                 handle_sighup: bool = True,
                 loop_health: bool = True) -> None:
        if app_config is not None:
            check_app_model(app_config)
        if config is None:
            loaded: Config[Any] = Config.load(path, env=env, argv=argv, app=app_config)
            config = cast("Config[M]", loaded)
        else:
            config.validate()
        health = HealthState(amnesia=config.amnesia.enabled, pq_mode=config.pq.mode,
                             pq_required=config.pq.require_pq,
                             prerequisites=("config", "bus_attached"))
        self.metrics = Metrics(amnesia=config.amnesia.enabled, health=health)
        self.health = health
        self.bus: Bus[KernelEvent] = Bus(config.bus.capacity, metrics=self.metrics)
        self.config_cell = ConfigCell(config, path=path, env=env, argv=argv, bus=self.bus,
                                      metrics=self.metrics, app=app_config)
        self.listeners = ListenSockets()
        # Children read ctx.config through the cell, so they see every applied reload.
        self.supervisor = Supervisor.from_config(
            config, bus=self.bus, metrics=self.metrics, health=health,
            config=self.config_cell.get, config_changes=self.config_cell.changes,
            request_shutdown=self.request_shutdown,
            listen_socket=lambda name: self.listeners.dup(name))
        fed = config.federation
        self.fleet = Fleet(own_node=fed.node, prefix=fed.prefix, capacity=config.bus.capacity,
                           counters=self.metrics.counters)
        # composed only when configured: without a URL nothing of NATS is loaded or started
        self._federation: Federation | None = (
            Federation(fed, bus=self.bus, fleet=self.fleet, counters=self.metrics.counters)
            if fed.nats_url else None)
        self._loop_health = LoopHealth(
            self.metrics.counters,
            threshold=config.observability.loop_block_threshold.total_seconds(),
        ) if loop_health else None
        self.http_addr: tuple[str, int] | None = None
        self._pools: dict[str, WorkerPool] = {}
        self._serve_http = True  # a worker process's kernel serves nothing
        self._watch_config = watch_config
        self._handle_sighup = handle_sighup
        self._http_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._undo: list[Any] = []
        self._streams: set[asyncio.Task[Any]] = set()
        self._started_at: float | None = None
        self._run: dict[str, Any] | None = None  # pid and wall-clock start: this run's identity
        self._state = "new"  # new -> running -> draining -> stopped
        self._shutdown_task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()  # wakes run() when shutdown() is called

    # ------------------------------------------------------------------ composition

    @property
    def config(self) -> Config[M]:
        """The current config snapshot (changes on every applied reload)."""
        return self.config_cell.get()

    @property
    def state(self) -> str:
        """``new``, ``running``, ``draining`` or ``stopped``."""
        return self._state

    def supervise(self, name: str,
                  fn: Callable[[ChildContext[Config[M]]], Awaitable[None]] | Supervisor, *,
                  restart: RestartType = "permanent", depends_on: Iterable[str] = (),
                  **options: Any) -> None:
        """Add a child to the root supervisor (see :meth:`Supervisor.add`).

        ``fn`` receives a ``ChildContext[Config[M]]``: ``ctx.config.app`` is your app config.
        ``depends_on`` names siblings that must report ready before this child starts.
        """
        self.supervisor.add(name, fn, restart=restart, depends_on=depends_on, **options)

    def listen(self, name: str, addr: str, *, allow_unspecified: bool = False) -> socket.socket:
        """Bind the listening socket ``name`` on ``addr`` (``"host:port"``) once; return it.

        Children get it with ``ctx.listen_socket(name)`` (a duplicate they own); every worker
        process of :meth:`supervise_workers` inherits it, so N workers accept on one port.
        Port 0 picks a free port (``sock.getsockname()``, ``/status`` show it). The same name
        and address again returns the same socket. An address that binds every interface is
        refused unless ``allow_unspecified=True`` (as for the observability address). In a
        worker process the parent binds it (once, for every worker). Raises ``ValueError``
        (bad name or address, every interface, name already bound elsewhere) or ``OSError``
        naming the address (address in use, permission).
        """
        return self.listeners.bind(name, addr, allow_unspecified=allow_unspecified)

    def supervise_workers(self, name: str, app: str | Callable[..., Any], *,
                          count: int | None = None, restart: RestartType = "permanent",
                          **options: Any) -> None:
        """Run ``app`` in ``count`` worker processes, supervised as children ``name/0`` ...

        ``app`` is ``"module:factory"`` (or a module-level function): each worker process
        imports it and calls it with its own kernel, as ``ron-kernel run --app`` does. Worker
        ``i`` is the root supervisor's child ``f"{name}/{i}"``, with the same restart policy
        as any child (``restart`` and ``**options`` as :meth:`supervise`). ``count`` defaults
        to ``workers.count``. Workers get this kernel's validated config (and every applied
        reload, all or none), its listening sockets, and send back their events (as
        ``name/i/<child>``), readiness (``workers.min_ready``), heartbeats
        (``workers.heartbeat_timeout``) and metrics (labels ``pool``, ``worker``).
        See docs/WORKERS.md. Raises ``ValueError`` for a bad name or count, an app spec that
        is not ``module:attribute``, or an app config model another process cannot import.
        """
        if not isinstance(name, str) or not _POOL_NAME.fullmatch(name):
            raise ValueError(f"worker pool name must be 1 to 64 letters, digits, '_', '.' or "
                             f"'-', got {name!r}")
        if name in self._pools:
            raise ValueError(f"duplicate worker pool name {name!r}")
        spec = app if isinstance(app, str) else spec_of(app, what="worker app")
        module, sep, attr = spec.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"worker app must be 'module:factory', got {spec!r}")
        cfg = self.config
        if count is None:
            count = cfg.workers.count
        if isinstance(count, bool) or not isinstance(count, int) or count < 1 \
                or count > 1024:
            raise ValueError(f"worker count must be an int from 1 to 1024 (workers.count is "
                             f"{cfg.workers.count}), got {count!r}")
        if cfg.workers.min_ready > count:
            raise ValueError(f"workers.min_ready ({cfg.workers.min_ready}) is greater than "
                             f"the {count} workers of pool {name!r}")
        model_spec(type(cfg.app) if cfg.app is not None else None)  # importable by workers?
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        if count > OVERSUBSCRIBED * cpus:
            _log.warning("workers_oversubscribed", pool=name, workers=count, cpus=cpus,
                         reason=f"more than {OVERSUBSCRIBED} worker processes per CPU")
        pool = WorkerPool(name, spec, count, bus=self.bus, counters=self.metrics.counters,
                          health=self.health, config=self.config_cell.get,
                          listeners=self.listeners, request_shutdown=self.request_shutdown,
                          rollback=self.config_cell.reload)
        options.setdefault("shutdown_timeout", cfg.shutdown.drain_deadline)
        for index in range(count):
            self.supervisor.add(f"{name}/{index}", pool.child(index), restart=restart,
                                **options)
        self._pools[name] = pool
        self._undo.append(self.config_cell.subscribe(pool.on_config))
        self._undo.append(self.metrics.add_scrape_source(pool.scrape))

    def request_shutdown(self, reason: str = "") -> None:
        """Ask the kernel to drain and stop; returns at once (safe from a child, sync).

        ``run()`` returns after the drain. Calling it again, or after shutdown began, does
        nothing more.
        """
        if self._shutdown_task is not None:
            return
        _log.info("shutdown_requested", reason=reason or "requested")
        self._stop_requested.set()
        if self._state != "new":
            self._shutdown_task = asyncio.ensure_future(self._shutdown(None))

    def urls(self) -> dict[str, str]:
        """The observability URLs (empty until the HTTP server is up)."""
        if self.http_addr is None:
            return {}
        host, port = self.http_addr
        base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return {name: f"{base}/{name}" for name in
                ("metrics", "healthz", "readyz", "status", "events", "ui")} | {"base": base}

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` answers: config (version, watcher, last reload), readiness,
        children, bus statistics, mailboxes, loop health, federation (URL redacted) and the
        fleet's nodes.

        ``run`` identifies this run of the kernel (``pid``, wall-clock ``started_at``; ``None``
        before start): a client polling an address sees a restarted kernel by it.
        ``loop`` holds the lag p50/p99/max over the last minute, the number of blocks and the
        last block (duration and stack), or ``{"enabled": false}`` with ``loop_health=False``.
        ``mailboxes`` lists name, depth and capacity of the mailboxes counted by the kernel's
        metrics.
        """
        cfg = self.config
        now = time.monotonic()
        return {
            "state": self._state,
            "uptime_s": None if self._started_at is None else round(now - self._started_at, 3),
            "run": self._run,
            "config_version": cfg.version,
            "config": self.config_cell.status().as_dict(),
            "readiness": dict(self.health.snapshot()),
            "supervisor": self._tree(),
            "bus": self.bus.stats().as_dict(),
            "mailboxes": [{"name": m.name, "depth": len(m), "capacity": m.capacity}
                          for m in self.metrics.counters.mailboxes()],
            "federation": (self._federation.status() if self._federation is not None
                           else {"enabled": False}),
            "fleet": self.fleet.status(),
            "loop": (self._loop_health.snapshot() if self._loop_health is not None
                     else {"enabled": False}),
            "listen": self.listeners.status(),
            "workers": {name: pool.status() for name, pool in self._pools.items()},
        }

    def _forward_control(self, action: str, path: str) -> Awaitable[dict[str, Any]] | None:
        """A control action on a worker process's child (``<pool>/<i>/<child>``), if any."""
        for pool in self._pools.values():
            pending = pool.forward_control(action, path)
            if pending is not None:
                return pending
        return None

    def _tree(self) -> dict[str, Any]:
        """The root supervisor's snapshot, each worker's own children under its entry."""
        tree: dict[str, Any] = dict(self.supervisor.snapshot())
        for pool in self._pools.values():
            pool.annotate(tree)
        return tree

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start logging, readiness prerequisites, the supervisor, reload triggers and HTTP.

        Idempotent. Raises ``OSError`` naming the address when the HTTP server cannot bind
        (everything started so far is stopped again).
        """
        if self._state != "new":
            return
        cfg = self.config
        configure_from_config(format=cfg.log.format, level=cfg.log.level,
                              amnesia=cfg.amnesia.enabled)
        self._state = "running"
        self._started_at = time.monotonic()
        self._run = {"pid": os.getpid(), "started_at": round(time.time(), 6)}
        if self._loop_health is not None:
            self._loop_health.start()
        # asyncio's own complaints (abandoned tasks, unretrieved exceptions) as JSON lines
        asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
        self.health.satisfy("config")
        self.health.attach_bus(self.bus)
        self._undo.append(self.config_cell.subscribe(self._apply_reload))
        # undone in reverse: SIGHUP is removed first, then a queued or running reload cancelled
        self._undo.append(self.config_cell.cancel_pending_reloads)
        if not in_main_thread():
            # Signal handlers can only be installed in the main thread: this kernel still
            # works, stopped by shutdown()/request_shutdown() and reloaded by its file watcher.
            _log.warning("signal_handling_off",
                         reason="not the main thread: SIGHUP does not reload and SIGINT/SIGTERM "
                                "do not stop this kernel; call request_shutdown() to stop it")
        elif self._handle_sighup:  # shared: two kernels in one process both reload
            self._undo.append(self.config_cell.install_sighup())
        if self._watch_config:  # a missing directory is waited for (watcher state says so)
            self._watch_task = self.config_cell.start_watching()
        try:
            if self._federation is not None:
                # before the children start: their first Health events are federated too
                await self._federation.start()
            await self.supervisor.start()
            if cfg.observability.expose_http and self._serve_http:
                routes = [("GET", "/status", status_handler(self.status)),
                          ("GET", "/events", events_handler(self.bus, self._streams,
                                                             self.metrics.counters))]
                if cfg.observability.debug_endpoints:
                    routes.append(("GET", "/debug/tasks", debug_tasks_handler()))
                # POST /control/*: always routed, answered only while
                # observability.control_token is set (read per request: a reload rotates it)
                routes += control_routes(
                    token=lambda: self.config.observability.control_token,
                    supervisor=self.supervisor, reloader=self.config_cell,
                    counters=self.metrics.counters, forward=self._forward_control)
                routes += ui_routes()  # the live status page, GET /ui (see _ui.py)
                self._http_task, self.http_addr = await self.metrics.serve(
                    cfg.observability.addr, extra_routes=routes)
        except BaseException:
            await self.shutdown()
            raise
        _log.info("kernel_started", config_version=cfg.version,
                  pq_mode=cfg.pq.mode, urls=self.urls(), pid=os.getpid())

    async def run(self) -> None:
        """Start (if needed), wait for Ctrl-C or SIGTERM, then drain and return.

        Also returns, after the drain, when :meth:`shutdown` is called from elsewhere (a
        service, an admin endpoint of the embedder). A second Ctrl-C/SIGTERM while draining
        exits the process at once with status :data:`EXIT_SECOND_SIGNAL`, even while the loop
        is blocked (a plain ``signal`` handler, installed after the first signal). Outside the
        main thread no signal is handled: only :meth:`shutdown`/:meth:`request_shutdown` stop
        it.
        """
        await self.start()
        main = in_main_thread()
        if self._shutdown_task is None:
            waiters: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(self._stop_requested.wait())]
            if main:
                waiters.append(asyncio.ensure_future(wait_for_ctrl_c()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                # awaiting the cancelled wait_for_ctrl_c puts the previous handlers back
                await asyncio.gather(*waiters, return_exceptions=True)
            ctrl_c = waiters[-1] if main else None
            if ctrl_c is not None and ctrl_c.done() and not ctrl_c.cancelled():
                failure = ctrl_c.exception()
                if failure is not None:
                    raise failure
                _log.info("signal_received", reason="shutdown requested by signal")
        # Not through the loop: a child blocking it (time.sleep in its drain) must not hold the
        # operator's second signal.
        restore = (install_plain((signal.SIGINT, signal.SIGTERM), _exit_now) if main
                   else (lambda: None))
        try:
            await self.shutdown()
        finally:
            restore()

    async def shutdown(self, deadline: float | None = None) -> None:
        """Publish ``Shutdown``, drain the children within the deadline, then stop everything.

        Order: readiness turns 503 (``shutting_down``), ``KernelEvent.Shutdown`` is published
        (every subscriber receives it), the supervisor drains within ``deadline`` (default
        ``shutdown.drain_deadline``) plus its short abandon grace, reload triggers stop, the bus
        closes (``/events`` streams send what is left and end), federation sends its last
        events and closes its connection (bounded), and the HTTP server stops last.
        Always returns; idempotent and safe to call concurrently. Called from a supervised
        child (or a task it started) it cannot wait for the drain that waits for that child:
        it requests the shutdown (:meth:`request_shutdown`) and returns at once.
        """
        if current_child() is not None:
            self.request_shutdown(f"shutdown() called from child {current_child()!r}")
            return
        if self._shutdown_task is None:
            self._stop_requested.set()
            self._shutdown_task = asyncio.ensure_future(self._shutdown(deadline))
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, deadline: float | None) -> None:
        started = time.perf_counter()
        was = self._state
        self._state = "draining"
        self.health.satisfy("shutting_down", False)
        if was != "new":
            self.bus.publish(KernelEvent.Shutdown())
            _log.info("shutdown", reason="draining",
                      deadline_s=deadline if deadline is not None
                      else self.config.shutdown.drain_deadline.total_seconds())
        await self.supervisor.shutdown(deadline)
        for pool in self._pools.values():
            await pool.close()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.listeners.close()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        self.bus.close()
        if self._federation is not None:
            # after the bus closed: the pump drains every last event (Shutdown too), the
            # sender hands them over and the connection is flushed, within FLUSH_GRACE
            await self._federation.stop()
        self.fleet.close()
        if self._streams:
            # Give /events clients a moment to receive Shutdown and the end of the stream.
            await asyncio.wait(set(self._streams), timeout=STREAM_FLUSH_GRACE)
        if self._http_task is not None:
            self._http_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._http_task
        if self._loop_health is not None:
            self._loop_health.stop()
        self._state = "stopped"
        _log.info("shutdown_complete",
                  latency_ms=round((time.perf_counter() - started) * 1000, 3))

    async def __aenter__(self) -> Kernel[M]:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        # An error in the body (a bad child, a TypeError while building) surfaces at once:
        # the children get no drain time to wait out.
        await self.shutdown(0.0 if exc is not None else None)

    # ------------------------------------------------------------------ reload

    def _apply_reload(self, old: Config, new: Config) -> None:
        """Apply the keys that take effect at once; supervisor keys apply to future restarts."""
        if new.log != old.log or new.amnesia != old.amnesia:
            # immediate keys: the renderer, level and amnesia field of every following line
            # (an embedder's own configure_logging keeps its format, level and stream)
            configure_from_config(format=new.log.format, level=new.log.level,
                                  amnesia=new.amnesia.enabled)
        threshold = new.observability.loop_block_threshold
        if threshold != old.observability.loop_block_threshold and self._loop_health is not None:
            self._loop_health.set_threshold(threshold.total_seconds())
        if new.pq != old.pq:
            self.health.configure_pq(new.pq.mode, new.pq.require_pq)
        if new.supervisor != old.supervisor or new.shutdown != old.shutdown:
            sup = new.supervisor
            self.supervisor.reconfigure(
                min_backoff=sup.min_backoff, max_backoff=sup.max_backoff,
                restart_cap=sup.restart_cap, restart_window=sup.restart_window,
                reset_after=sup.reset_after, drain_deadline=new.shutdown.drain_deadline,
                quarantine_cooldown=sup.quarantine_cooldown)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    """A second Ctrl-C while draining: leave at once, non-zero (the operator insisted)."""
    exit_now(f"ron-kernel: second {signal.Signals(signum).name} while draining; exiting now",
             EXIT_SECOND_SIGNAL)
