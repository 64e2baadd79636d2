"""The implementation behind :mod:`ron_kernel.supervisor` (the public facade documents it)."""

from __future__ import annotations

import asyncio
import inspect
import random
import socket
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from ._events import KernelEvent
from ._logging import get_logger
from ._supervisor_child import (
    ChildContext,
    ChildExit,
    ChildFn,
    ChildInfo,
    ChildRecord,
    NotAwaitableChild,
    Pending,
    crash_reason,
    format_traceback,
    is_fatal,
    set_current_child,
    trimmed_traceback,
)
from ._supervisor_policy import (
    DEFAULT_RESET_AFTER,
    MAX_QUARANTINE_COOLDOWN,
    RESTART_TYPES,
    STRATEGIES,
    RestartType,
    RestartWindow,
    Strategy,
    backoff_delay,
    dependency_cycle,
    dependency_ranks,
    to_seconds,
)
from ._tracing import kernel_span

if TYPE_CHECKING:
    from types import TracebackType

    from ._bus import Bus
    from ._health import HealthState
    from ._metrics import Metrics

__all__ = [
    "ABANDON_GRACE",
    "ChildContext",
    "ChildInfo",
    "Supervisor",
    "backoff_delay",
    "known_names",
    "resolve_child",
]

ABANDON_GRACE: Final[float] = 0.1
"""Seconds a cancelled child gets to finish before it is abandoned (and counted)."""

_DEFAULT_DEADLINE: Final = 5.0
_log = get_logger("supervisor")


class Supervisor:
    """Supervises async children: restarts with jittered backoff, quarantine, OTP strategies.

    Args:
        name: this supervisor's name (logs, and its default name as a child of another).
        strategy: ``"one_for_one"`` (only the crashed child restarts), ``"one_for_all"``
            (every other child is stopped and restarted with it) or ``"rest_for_one"``
            (the children added after it are stopped and restarted with it).
        bus: where ``ServiceCrashed`` and quarantine ``Health`` events go.
        metrics: counts ``service_restarts_total``, ``tasks_spawned_total{kind="child"}``,
            ``tasks_aborted_total{kind="child"|"abandoned"}``, ``backoff_retries_total{op=
            "restart"}`` and the ``supervisor_quarantined`` gauge.
        health: readiness; defaults to ``metrics.health`` when ``metrics`` is given.
        min_backoff, max_backoff: floor and cap of the backoff (``timedelta`` or seconds).
        restart_cap, restart_window: more than ``restart_cap`` restarts inside the sliding
            ``restart_window`` quarantine the child.
        reset_after: uptime after which a child's backoff attempt counter starts again at 0
            (default: 30 s, the same default as config ``supervisor.reset_after``).
        rng: random source of the jitter; clock: time source of windows and uptimes
            (default: the running loop's ``time``). Both are for deterministic tests.
        config: the config snapshot children see as ``ctx.config``, or a zero-argument callable
            returning the current one (so reloads are seen on the next read).
        drain_deadline: default deadline of :meth:`shutdown` (5 s).
        config_changes: a zero-argument callable returning an async iterator of applied
            configs (``ConfigCell.changes``): what ``ctx.config_changes()`` iterates.
        request_shutdown: what ``ctx.request_shutdown(reason)`` calls (the kernel's
            ``request_shutdown``); by default the supervisor shuts itself down.
        quarantine_cooldown: after this long a quarantined child gets one probe start; it
            leaves quarantine if it stays up ``reset_after``, or goes back with the cool-down
            doubled (at most 1 h). ``0`` (default) keeps quarantine until :meth:`release`.
        listen_socket: what ``ctx.listen_socket(name)`` calls (the kernel's named listening
            sockets); by default children have none.

    Bad values raise ``ValueError``/``TypeError`` here, never at crash time.
    """

    name: str
    """This supervisor's name."""
    strategy: Strategy
    """``one_for_one``, ``one_for_all`` or ``rest_for_one``."""

    def __init__(
        self, *, name: str = "root", strategy: Strategy = "one_for_one",
        bus: Bus[Any] | None = None, metrics: Metrics | None = None,
        health: HealthState | None = None,
        min_backoff: timedelta | float = timedelta(milliseconds=100),
        max_backoff: timedelta | float = timedelta(seconds=30),
        restart_cap: int = 5, restart_window: timedelta | float = timedelta(seconds=60),
        reset_after: timedelta | float | None = None, rng: random.Random | None = None,
        clock: Callable[[], float] | None = None, config: Any = None,
        drain_deadline: timedelta | float = _DEFAULT_DEADLINE,
        config_changes: Callable[[], AsyncIterator[Any]] | None = None,
        request_shutdown: Callable[[str], None] | None = None,
        quarantine_cooldown: timedelta | float = 0.0,
        listen_socket: Callable[[str], socket.socket] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"supervisor name must be a non-empty str, got {name!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if isinstance(restart_cap, bool) or not isinstance(restart_cap, int):
            raise TypeError(f"restart_cap must be an int, got {type(restart_cap).__name__}")
        if restart_cap < 1:
            raise ValueError(f"restart_cap must be >= 1, got {restart_cap}")
        self.name = name
        self.strategy: Strategy = strategy
        self._min_backoff = to_seconds(min_backoff, "min_backoff")
        self._max_backoff = to_seconds(max_backoff, "max_backoff")
        if self._min_backoff > self._max_backoff:
            raise ValueError(
                f"min_backoff ({self._min_backoff}s) must be <= max_backoff "
                f"({self._max_backoff}s)")
        self._restart_cap = restart_cap
        self._restart_window = to_seconds(restart_window, "restart_window")
        self._reset_after = (DEFAULT_RESET_AFTER if reset_after is None
                             else to_seconds(reset_after, "reset_after", allow_inf=True))
        self._drain_deadline = to_seconds(drain_deadline, "drain_deadline")
        self._cooldown = min(to_seconds(quarantine_cooldown, "quarantine_cooldown"),
                             MAX_QUARANTINE_COOLDOWN)
        self._bus = bus
        self._counters = metrics.counters if metrics is not None else None
        self._health = health if health is not None or metrics is None else metrics.health
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._config_source: Callable[[], Any] | None = (
            config if callable(config) else (lambda: config) if config is not None else None)
        self._config_changes = config_changes
        self._request_shutdown = request_shutdown
        self._listen_socket = listen_socket
        self._children: dict[str, ChildRecord] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closing = False
        self._shutdown_task: asyncio.Task[None] | None = None
        # Tasks we gave up on: a strong reference keeps them from being collected mid-flight.
        self._abandoned: set[asyncio.Task[None]] = set()
        self._restarting: set[str] = set()  # children inside restart() right now

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, config: Any, /, *, bus: Bus[Any] | None = None,
                    metrics: Metrics | None = None, health: HealthState | None = None,
                    **overrides: Any) -> Supervisor:
        """Build a supervisor from a :class:`~ron_kernel.Config` (``config.supervisor.*``).

        Reads ``min_backoff``, ``max_backoff``, ``restart_cap``, ``restart_window``,
        ``reset_after`` (if present) and ``config.shutdown.drain_deadline`` (if present).
        ``overrides`` win over the config; ``config`` becomes what children see as
        ``ctx.config`` unless ``config=`` is overridden (pass a callable for live reloads).
        """
        sup_cfg = config.supervisor
        kwargs: dict[str, Any] = {
            "min_backoff": sup_cfg.min_backoff,
            "max_backoff": sup_cfg.max_backoff,
            "restart_cap": sup_cfg.restart_cap,
            "restart_window": sup_cfg.restart_window,
            "reset_after": getattr(sup_cfg, "reset_after", None),
            "quarantine_cooldown": getattr(sup_cfg, "quarantine_cooldown", 0.0),
            "config": config,
        }
        drain = getattr(getattr(config, "shutdown", None), "drain_deadline", None)
        if drain is not None:
            kwargs["drain_deadline"] = drain
        kwargs.update(overrides)
        return cls(bus=bus, metrics=metrics, health=health, **kwargs)

    def reconfigure(self, *, min_backoff: timedelta | float | None = None,
                    max_backoff: timedelta | float | None = None,
                    restart_cap: int | None = None,
                    restart_window: timedelta | float | None = None,
                    reset_after: timedelta | float | None = None,
                    drain_deadline: timedelta | float | None = None,
                    quarantine_cooldown: timedelta | float | None = None) -> None:
        """Change the restart policy for future restarts (a config reload calls this).

        Running children are not touched (CONFIG.MD §5: ``supervisor.*`` is quasi-disruptive):
        the new backoff applies to the next crash, the new cap and window to every child's
        window from now on (restarts already recorded stay recorded). Everything is validated
        before anything changes: a bad value raises and the old policy stays whole.
        """
        lo = self._min_backoff if min_backoff is None else to_seconds(min_backoff, "min_backoff")
        hi = self._max_backoff if max_backoff is None else to_seconds(max_backoff, "max_backoff")
        if lo > hi:
            raise ValueError(f"min_backoff ({lo}s) must be <= max_backoff ({hi}s)")
        cap = self._restart_cap if restart_cap is None else restart_cap
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"restart_cap must be an int >= 1, got {cap!r}")
        window = (self._restart_window if restart_window is None
                  else to_seconds(restart_window, "restart_window"))
        reset = (self._reset_after if reset_after is None
                 else to_seconds(reset_after, "reset_after", allow_inf=True))
        drain = (self._drain_deadline if drain_deadline is None
                 else to_seconds(drain_deadline, "drain_deadline"))
        cooldown = (self._cooldown if quarantine_cooldown is None
                    else min(to_seconds(quarantine_cooldown, "quarantine_cooldown"),
                             MAX_QUARANTINE_COOLDOWN))
        self._min_backoff, self._max_backoff = lo, hi
        self._restart_cap, self._restart_window = cap, window
        self._reset_after, self._drain_deadline = reset, drain
        self._cooldown = cooldown
        for child in self._children.values():
            child.window.cap = cap
            child.window.window = window

    def add(self, name: str, fn: ChildFn | Supervisor, *, restart: RestartType = "permanent",
            shutdown_timeout: timedelta | float = timedelta(seconds=5),
            fatal: Iterable[type[BaseException]] | type[BaseException] = (),
            depends_on: Iterable[str] = ()) -> None:
        """Add a child. ``fn`` is ``async (ChildContext) -> None`` or a :class:`Supervisor`.

        ``restart``: ``"permanent"`` (always restarted; returning counts as a crash with reason
        ``"exited"``), ``"transient"`` (restarted only after an exception) or ``"temporary"``
        (never restarted). ``shutdown_timeout``: how long it may drain before it is cancelled.
        ``fatal``: exception types that quarantine at once. ``depends_on``: siblings that must
        report ready (``ctx.ready()``) before this child starts; shutdown stops it before
        them. When the supervisor is already started the child starts now (or once its
        dependencies are ready). A dependency cycle is a ``ValueError`` naming it, here or at
        :meth:`start`; so is an unknown name at :meth:`start`. Raises ``ValueError`` (duplicate
        name, unknown restart type, negative timeout) or ``TypeError`` (not a callable,
        non-exception ``fatal``).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"child name must be a non-empty str, got {name!r}")
        if name in self._children:
            raise ValueError(f"duplicate child name {name!r} in supervisor {self.name!r}")
        if fn is self:
            raise ValueError(f"supervisor {self.name!r} cannot supervise itself")
        if not callable(fn):
            raise TypeError(
                f"child {name!r} must be a callable taking a ChildContext and returning an "
                f"awaitable (async def, a lambda returning a coroutine, a Supervisor), "
                f"got {fn!r}")
        if restart not in RESTART_TYPES:
            raise ValueError(
                f"restart for child {name!r} must be one of {RESTART_TYPES}, got {restart!r}")
        timeout = to_seconds(shutdown_timeout, f"shutdown_timeout of child {name!r}")
        fatal_types = (fatal,) if isinstance(fatal, type) else tuple(fatal)
        for kind in fatal_types:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise TypeError(
                    f"fatal for child {name!r} must hold exception types, got {kind!r}")
        if isinstance(depends_on, str):
            depends_on = (depends_on,)
        deps = tuple(dict.fromkeys(depends_on))
        for dep in deps:
            if not isinstance(dep, str) or not dep:
                raise ValueError(f"depends_on of child {name!r} must hold child names, "
                                 f"got {dep!r}")
        if name in deps:
            raise ValueError(f"child {name!r} cannot depend on itself")
        graph = {n: c.depends_on for n, c in self._children.items()} | {name: deps}
        cycle = dependency_cycle(graph)
        if cycle is not None:
            raise ValueError(f"dependency cycle in supervisor {self.name!r}: "
                             + " -> ".join(cycle))
        if self._started and not self._closing:
            self._check_known(name, deps)
        child = ChildRecord(
            name, fn, index=len(self._children), restart=restart, shutdown_timeout=timeout,
            fatal=fatal_types, window=RestartWindow(self._restart_cap, self._restart_window),
            depends_on=deps)
        self._children[name] = child
        if self._started and not self._closing:
            self._spawn_when_ready(child)

    def _check_known(self, name: str, deps: tuple[str, ...]) -> None:
        unknown = [d for d in deps if d not in self._children and d != name]
        if unknown:
            raise ValueError(f"child {name!r} depends on unknown child(ren) "
                             f"{', '.join(map(repr, unknown))} in supervisor {self.name!r} "
                             f"(known: {', '.join(self._children) or 'none'})")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every child in the order added. Idempotent; allowed again after shutdown."""
        if self._started and not self._closing:
            return
        if self._shutdown_task is not None:
            await asyncio.shield(self._shutdown_task)
        for child in self._children.values():
            self._check_known(child.name, child.depends_on)
        self._loop = asyncio.get_running_loop()
        self._started, self._closing, self._shutdown_task = True, False, None
        for child in self._children.values():
            if child.state != "quarantined" and not child.alive():
                self._spawn_when_ready(child)

    async def shutdown(self, deadline: timedelta | float | None = None) -> None:
        """Stop every child; always returns within ``deadline`` + :data:`ABANDON_GRACE`.

        Sets every child's ``shutdown`` event, waits for them in reverse start order, each
        within its own ``shutdown_timeout`` and all within ``deadline`` (default: the
        supervisor's ``drain_deadline``), cancels the rest (``tasks_aborted_total{kind="child"}``)
        and abandons a child that still runs :data:`ABANDON_GRACE` later
        (``tasks_aborted_total{kind="abandoned"}``): it is no longer awaited by anyone, so it
        cannot keep the loop from closing. No restart happens once shutdown began. Idempotent:
        a second call waits for the first.
        """
        seconds = self._drain_deadline if deadline is None else to_seconds(deadline, "deadline")
        if self._shutdown_task is None:
            self._closing = True
            self._shutdown_task = asyncio.get_running_loop().create_task(
                self._shutdown(seconds), name=f"supervisor:{self.name}:shutdown")
        await asyncio.shield(self._shutdown_task)

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.shutdown()

    async def __call__(self, ctx: ChildContext[Any]) -> None:
        """Run as a child of another supervisor: start, wait for ``ctx.shutdown``, drain.

        Unset ``bus`` and config are inherited from the parent's context. The children get
        what is left of the parent's drain time, minus the grace.
        """
        # A nested supervisor inherits what its parent's children get.
        if self._bus is None:
            self._bus = ctx._bus
        if self._config_source is None:
            self._config_source = ctx._config_source
        if self._health is None:
            self._health = ctx._health
        if self._config_changes is None:
            self._config_changes = ctx._changes
        if self._request_shutdown is None:
            self._request_shutdown = ctx._request_shutdown
        if self._listen_socket is None:
            self._listen_socket = ctx._listen
        await self.start()
        ctx.ready()
        try:
            await ctx.shutdown.wait()
        finally:
            left = ctx.time_left()
            await self.shutdown(0.0 if left is None else max(0.0, left - 2 * ABANDON_GRACE))

    def _shutdown_soon(self, reason: str) -> None:
        """``ctx.request_shutdown`` without a kernel: this supervisor drains (not awaited)."""
        _log.info("shutdown_requested", supervisor=self.name, reason=reason)
        if self._shutdown_task is None and self._loop is not None:
            self._closing = True
            self._shutdown_task = self._loop.create_task(
                self._shutdown(self._drain_deadline), name=f"supervisor:{self.name}:shutdown")

    def release(self, name: str) -> bool:
        """Take ``name`` out of quarantine and start it again with a clean restart record.

        Returns ``False`` (and does nothing) when the child is not quarantined. Raises
        ``KeyError`` for an unknown name.
        """
        child = self._child(name)
        if child.state not in ("quarantined", "probing"):
            return False
        self._cancel_probe(child)
        if child.state == "probing" and child.alive():
            self._leave_quarantine(child, "released")
            return True
        child.window.clear()
        child.attempt = 0
        child.cooldown = 0.0
        if self._counters is not None:
            self._counters.supervisor_quarantined.set(name, value=0.0)
        if self._health is not None:
            self._health.quarantine(name, False)
        _log.info("service_released", child=name, supervisor=self.name)
        if self._started and not self._closing:
            self._spawn_when_ready(child)
        else:
            child.state = "stopped"
        return True

    async def restart(self, name: str) -> None:
        """Stop ``name`` and start it again now: an operator's restart, not a crash.

        The child is asked to drain within its ``shutdown_timeout`` (then cancelled, then
        abandoned, exactly as at shutdown) and is started again at once (once its
        ``depends_on`` are ready): no backoff wait, its backoff attempt counter back at 0,
        nothing added to its restart window, no ``ServiceCrashed`` and no
        ``service_restarts_total`` (those count crashes). A restart scheduled after a crash is
        taken over; a quarantined child leaves quarantine with a clean record, as with
        :meth:`release`. Only this child restarts, whatever the strategy; its dependents keep
        running. Its readiness turns false until the new run reports ready (a ``Health``
        event each way when it reports readiness). Logs ``service_restart_requested``.
        Returns once the new run has started (or waits for its dependencies).

        Raises ``KeyError`` for an unknown name, ``RuntimeError`` when the supervisor is not
        running or the child is already being restarted.
        """
        child = self._child(name)
        if not self._started or self._closing or self._loop is None:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        if name in self._restarting:
            raise RuntimeError(f"child {name!r} is already being restarted")
        self._restarting.add(name)
        try:
            self._cancel_probe(child)
            if child.state in ("quarantined", "probing"):
                self._leave_quarantine(child, "restarted")
                if not child.alive():
                    child.state = "stopped"
            child.probing = False
            child.attempt = 0
            child.pending = None  # a scheduled (group) restart goes on without this child
            if child.reports_ready and self._health is not None:
                self._observe("health", self._health.set, name, False)
            child.is_ready = False
            self._observe("log", _log.info, "service_restart_requested", child=name,
                          supervisor=self.name, state=child.state)
            await self._stop(child, child.shutdown_timeout)
            if self._closing:
                return
            with kernel_span("supervisor", "restart", child=name, supervisor=self.name,
                             restarts=child.restarts):
                self._spawn_when_ready(child)
            await asyncio.sleep(0)  # let the new run take its first step before returning
        finally:
            self._restarting.discard(name)

    def child_supervisor(self, name: str) -> Supervisor | None:
        """The :class:`Supervisor` that runs as child ``name``, or ``None`` for a plain child.

        Raises ``KeyError`` for an unknown name. With it a tree can be walked by path
        (``"outer/inner/worker"``), as the control routes do.
        """
        fn = self._child(name).fn
        return fn if isinstance(fn, Supervisor) else None

    # ------------------------------------------------------------------ introspection

    def snapshot(self) -> dict[str, ChildInfo]:
        """Per child: state, restarts, restarts in the window, last reason/traceback, uptime...

        A plain, JSON-serialisable dict (see :class:`ChildInfo`), in the order children were
        added; a nested supervisor's entry carries its own snapshot under ``children``.
        """
        now = self._now()
        wall_offset = time.time() - now
        out: dict[str, ChildInfo] = {}
        for child in self._children.values():
            started = child.started_at
            uptime = max(0.0, now - started) if started is not None else None
            pending = child.pending
            out[child.name] = {
                "name": child.name,
                "state": child.state,
                "restart": child.restart,
                "restarts": child.restarts,
                "restarts_in_window": child.window.count(now),
                "attempt": child.attempt,
                "last_reason": child.last_reason,
                "last_traceback": child.last_traceback,
                "uptime": uptime if child.state == "running" else None,
                "next_restart_at": pending.due + wall_offset if pending is not None else None,
                "depends_on": list(child.depends_on),
                "next_probe_at": (child.probe_at + wall_offset
                                  if child.probe_at is not None else None),
                "quarantine_cooldown": (child.cooldown if child.state in ("quarantined",
                                                                          "probing")
                                        and child.cooldown else None),
            }
            if isinstance(child.fn, Supervisor):
                out[child.name]["strategy"] = child.fn.strategy
                out[child.name]["children"] = child.fn.snapshot()
        return out

    def __repr__(self) -> str:
        return (f"Supervisor(name={self.name!r}, strategy={self.strategy!r}, "
                f"children={list(self._children)!r})")

    # ------------------------------------------------------------------ internals

    def _child(self, name: str) -> ChildRecord:
        try:
            return self._children[name]
        except KeyError:
            raise KeyError(f"no child named {name!r} in supervisor {self.name!r}") from None

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        loop = self._loop
        return loop.time() if loop is not None else time.monotonic()

    def _spawn(self, child: ChildRecord) -> None:
        loop = self._loop
        assert loop is not None
        health = self._health

        def on_ready(ok: bool) -> None:
            child.reports_ready = True
            child.is_ready = ok
            if ok:
                self._start_waiting()

        ctx: ChildContext[Any] = ChildContext(
            child.name, bus=self._bus, config_source=self._config_source, health=health,
            on_ready=on_ready, changes=self._config_changes,
            request_shutdown=self._request_shutdown or self._shutdown_soon,
            depends_on=child.depends_on, listen_socket=self._listen_socket)
        child.ctx = ctx
        child.stopping = False
        child.pending = None
        child.is_ready = False
        child.state = "probing" if child.probing else "starting"
        child.started_at = self._now()
        task = loop.create_task(self._run(child, ctx), name=f"{self.name}/{child.name}")
        child.task = task
        task.add_done_callback(lambda t: self._on_exit(child, t))
        if self._counters is not None:
            self._counters.tasks_spawned_total.inc("child")

    def _deps_ready(self, child: ChildRecord) -> bool:
        for dep in child.depends_on:
            record = self._children.get(dep)
            if record is None or not record.is_ready or not record.alive():
                return False
        return True

    def _spawn_when_ready(self, child: ChildRecord) -> None:
        """Start ``child`` now, or mark it waiting until its dependencies report ready."""
        if self._deps_ready(child):
            self._spawn(child)
        else:
            child.state = "waiting"
            child.pending = None

    def _start_waiting(self) -> None:
        if not self._started or self._closing:
            return
        for child in self._children.values():
            if child.state == "waiting" and not child.alive() and self._deps_ready(child):
                self._spawn(child)

    async def _run(self, child: ChildRecord, ctx: ChildContext[Any]) -> None:
        if not child.probing:
            child.state = "running"
        set_current_child(ctx.name)  # this task's own context: set once, never reset
        try:
            # Called and awaited here, in this one frame: every frame of a crash's traceback
            # costs its formatting (Python 3.11 compiles the line for its caret marks).
            result = child.fn(ctx)
            if not inspect.isawaitable(result):
                raise NotAwaitableChild(
                    f"child {ctx.name!r} returned {type(result).__name__}, not an awaitable: "
                    "make it `async def` (or a callable returning a coroutine)")
            await result
        except (SystemExit, KeyboardInterrupt) as exc:
            # A child cannot end the process: it is a crash of that child (docs/DECISIONS.md).
            raise ChildExit(exc) from exc

    def _on_exit(self, child: ChildRecord, task: asyncio.Task[None]) -> None:
        if task is not child.task:
            return  # an abandoned run finishing late: it no longer speaks for the child
        child.task = None
        uptime = self._now() - child.started_at if child.started_at is not None else 0.0
        child.started_at = None
        exc: BaseException | None
        if task.cancelled():
            exc = asyncio.CancelledError()
        else:
            exc = task.exception()
        if child.stopping or self._closing:
            if child.pending is None:
                child.state = "stopped"
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                self._observe("log", _log.warning, "service_failed_while_stopping",
                              child=child.name, supervisor=self.name,
                              reason=crash_reason(exc), exc_info=exc)
            return
        self._on_crash(child, exc, uptime)

    def _on_crash(self, child: ChildRecord, exc: BaseException | None, uptime: float) -> None:
        """Decide and schedule first, then report: no observer can stop supervision."""
        name = child.name
        if exc is None and child.restart != "permanent":
            child.state = "stopped"
            self._observe("log", _log.info, "service_exited", child=name,
                          supervisor=self.name, restart=child.restart)
            return
        reason = crash_reason(exc)
        child.last_reason = reason
        text = format_traceback(exc) if exc is not None else None
        child.last_traceback = trimmed_traceback(exc, text) if exc is not None else None
        # 1. The decision, in plain code that touches no observer.
        quarantine_reason: str | None = None
        delay: float | None = None
        now = self._now()
        child.is_ready = False
        if child.probing:  # the probe start failed: back to quarantine, cool-down doubled
            child.probing = False
            self._cancel_probe(child)
            child.cooldown = min(child.cooldown * 2, MAX_QUARANTINE_COOLDOWN)
            self._count_probe(child.name, "failed")
            quarantine_reason = f"probe failed: {reason}"
        elif child.restart == "temporary":
            child.state = "stopped"
        elif exc is not None and is_fatal(exc, child.fatal):
            quarantine_reason = f"fatal: {reason}"
        else:
            if uptime >= self._reset_after:
                child.attempt = 0
            if child.window.admit(now):
                delay = backoff_delay(child.attempt, self._min_backoff, self._max_backoff,
                                      self._rng)
                child.attempt += 1
                self._schedule_restart(child, delay)
            else:
                quarantine_reason = reason
        if quarantine_reason is not None:
            self._enter_quarantine(child)
        # 2. The reports: readiness, the event, the log line; each isolated and counted.
        health = self._health
        if child.reports_ready and health is not None:
            self._observe("health", health.set, name, False)
        if self._bus is not None:
            self._observe("bus", self._bus.publish,
                          KernelEvent.ServiceCrashed(service=name, reason=reason))
        if quarantine_reason is not None:
            self._report_quarantine(child, quarantine_reason, text)
        elif delay is None:
            self._observe("log", _log.error, "service_crashed", child=name,
                          supervisor=self.name, reason=reason, restart="temporary",
                          restarts=child.restarts, exception=text)
        else:
            self._observe("log", _log.error, "service_crashed", child=name,
                          supervisor=self.name, reason=reason, restarts=child.restarts,
                          restarts_in_window=child.window.count(now),
                          backoff_ms=round(delay * 1e3, 3), exception=text)

    def _enter_quarantine(self, child: ChildRecord) -> None:
        child.state = "quarantined"
        child.pending = None
        if self._counters is not None:
            self._counters.supervisor_quarantined.set(child.name, value=1.0)
        if self._health is not None:
            self._health.quarantine(child.name, True)
        if self._cooldown > 0 and not self._closing and self._loop is not None:
            child.cooldown = child.cooldown or self._cooldown
            child.probe_at = self._now() + child.cooldown
            child.probe_task = self._loop.create_task(
                self._probe(child, child.cooldown), name=f"{self.name}/{child.name}:probe")

    async def _probe(self, child: ChildRecord, delay: float) -> None:
        """After the cool-down, one probe start; leave quarantine if it stays up."""
        await asyncio.sleep(delay)
        if self._closing or child.state != "quarantined":
            return
        child.probe_at = None
        child.probing = True
        self._count_probe(child.name, "started")
        self._observe("log", _log.warning, "service_probe_started", child=child.name,
                      supervisor=self.name, cooldown_s=child.cooldown,
                      passes_after_s=self._reset_after)
        self._spawn(child)
        await asyncio.sleep(self._reset_after)
        if child.probing and child.alive():
            self._leave_quarantine(child, "probe_passed")

    def _leave_quarantine(self, child: ChildRecord, how: str) -> None:
        child.probing = False
        child.cooldown = 0.0
        child.window.clear()
        child.attempt = 0
        if child.alive():
            child.state = "running"
        if self._counters is not None:
            self._counters.supervisor_quarantined.set(child.name, value=0.0)
        if self._health is not None:
            self._health.quarantine(child.name, False)
        if how == "probe_passed":
            self._count_probe(child.name, "passed")
        self._observe("log", _log.info, "service_released", child=child.name,
                      supervisor=self.name, how=how)

    def _cancel_probe(self, child: ChildRecord) -> None:
        task = child.probe_task
        child.probe_task = None
        child.probe_at = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _count_probe(self, name: str, outcome: str) -> None:
        if self._counters is not None:
            self._counters.supervisor_quarantine_probes_total.inc(name, outcome)

    def _report_quarantine(self, child: ChildRecord, reason: str, text: str | None) -> None:
        health = self._health
        # One Health(ok=False) per quarantine: when the crash already turned this child's
        # readiness false through a HealthState publishing on the same bus, that was it.
        told = child.reports_ready and health is not None and health.bus is self._bus
        if self._bus is not None and not told:
            self._observe("bus", self._bus.publish,
                          KernelEvent.Health(service=child.name, ok=False))
        self._observe("log", _log.error, "service_quarantined", child=child.name,
                      supervisor=self.name, reason=reason, restarts=child.restarts,
                      restart_cap=self._restart_cap, restart_window_s=self._restart_window,
                      exception=text)

    def _observe(self, observer: str, report: Callable[..., object], *args: Any,
                 **fields: Any) -> None:
        """Run one report; a failing observer is counted, never raised into supervision."""
        try:
            report(*args, **fields)
        except Exception:
            if self._counters is not None:
                self._counters.observer_errors_total.inc(observer)

    def _affected(self, child: ChildRecord) -> list[ChildRecord]:
        """Siblings the strategy stops and restarts along with ``child``."""
        if self.strategy == "one_for_one":
            return []
        return [c for c in self._children.values()
                if c is not child and c.state not in ("quarantined", "stopped")
                and (self.strategy == "one_for_all" or c.index > child.index)]

    def _schedule_restart(self, child: ChildRecord, delay: float) -> None:
        loop = self._loop
        assert loop is not None
        pending = Pending(self._now() + delay)
        pending.members.append(child)
        pending.crashed.add(child.name)
        for sibling in self._affected(child):
            previous = sibling.pending
            if previous is not None and previous is not pending:
                # An earlier scheduled group restart is folded into this one.
                if previous.task is not None:
                    previous.task.cancel()
                pending.crashed |= previous.crashed
                for member in previous.members:
                    if member not in pending.members:
                        pending.members.append(member)
            elif sibling not in pending.members:
                pending.members.append(sibling)
        for member in pending.members:
            member.pending = pending
            member.state = "backing_off"
        pending.task = loop.create_task(self._restart_after(pending, delay),
                                        name=f"{self.name}/{child.name}:restart")

    async def _restart_after(self, pending: Pending, delay: float) -> None:
        stops = [self._stop(m, m.shutdown_timeout) for m in pending.members if m.alive()]
        await asyncio.gather(asyncio.sleep(delay), *stops)
        if self._closing:
            return
        for member in sorted(pending.members, key=lambda c: c.index):
            if member.pending is not pending:
                continue
            if member.restart == "temporary" and member.name not in pending.crashed:
                member.pending, member.state = None, "stopped"
                continue
            if member.name not in pending.crashed:
                self._spawn_when_ready(member)
                continue
            member.restarts += 1
            if self._counters is not None:
                self._counters.service_restarts_total.inc(member.name)
                self._counters.backoff_retries_total.inc("restart")
            with kernel_span("supervisor", "restart", child=member.name,
                             supervisor=self.name, restarts=member.restarts):
                self._spawn_when_ready(member)

    async def _stop(self, child: ChildRecord, drain_for: float) -> None:
        """Ask one child to drain, cancel it after ``drain_for``, abandon it after the grace."""
        task, ctx, loop = child.task, child.ctx, self._loop
        if task is None or task.done() or ctx is None or loop is None:
            return
        child.stopping = True
        ctx._request_stop(loop.time() + drain_for)
        await asyncio.wait((task,), timeout=drain_for)
        if task.done():
            return
        task.cancel()
        self._count_aborted("child")
        await asyncio.wait((task,), timeout=ABANDON_GRACE)
        if not task.done():
            self._abandon(child, task)

    async def _shutdown(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + deadline
        for child in self._children.values():
            self._cancel_probe(child)
            pending = child.pending
            if pending is not None:
                if pending.task is not None:
                    pending.task.cancel()
                child.pending = None
            if not child.alive() and child.state in ("backing_off", "waiting"):
                child.state = "stopped"
        # Dependents stop before their dependencies: the deepest rank first, each rank drained
        # (within the shared deadline) before the next is told to stop.
        ranks = dependency_ranks({n: c.depends_on for n, c in self._children.items()})
        running = [c for c in self._children.values() if c.alive()]
        cancelled_total = 0
        for rank in sorted({ranks[c.name] for c in running}, reverse=True):
            group = [c for c in running if ranks[c.name] == rank]
            cancelled_total += await self._stop_group(group, loop.time(), end)
        _log.info("supervisor_stopped", supervisor=self.name,
                  elapsed_ms=round((loop.time() - t0) * 1e3, 3), cancelled=cancelled_total)

    async def _stop_group(self, group: list[ChildRecord], t0: float, end: float) -> int:
        loop = asyncio.get_running_loop()
        for child in group:
            child.stopping = True
            assert child.ctx is not None
            child.ctx._request_stop(min(t0 + child.shutdown_timeout, end))
        cancelled: list[tuple[ChildRecord, asyncio.Task[None]]] = []
        for child in reversed(group):
            task = child.task
            if task is None:
                continue
            left = min(t0 + child.shutdown_timeout, end) - loop.time()
            if left > 0 and not task.done():
                await asyncio.wait((task,), timeout=left)
            if not task.done():
                task.cancel()
                self._count_aborted("child")
                cancelled.append((child, task))
        if cancelled:
            await asyncio.wait([t for _, t in cancelled], timeout=ABANDON_GRACE)
            for child, task in cancelled:
                if not task.done():
                    self._abandon(child, task)
        return len(cancelled)

    def _count_aborted(self, kind: str) -> None:
        if self._counters is not None:
            self._counters.tasks_aborted_total.inc(kind)

    def _abandon(self, child: ChildRecord, task: asyncio.Task[None]) -> None:
        """Give up on a task that swallows cancellation, so it cannot hold the loop open.

        Closing its coroutine ends any child that merely catches ``CancelledError``; one that
        even swallows ``GeneratorExit`` is removed from asyncio's task registry, so
        ``asyncio.run`` does not wait for it when the loop closes.
        """
        child.task = None
        child.started_at = None
        if child.pending is None:
            child.state = "stopped"
        self._count_aborted("abandoned")
        _log.error("service_abandoned", child=child.name, supervisor=self.name,
                   reason="ignored cancellation", grace_ms=ABANDON_GRACE * 1e3)
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        # Whatever the abandoned task ends with (often "cannot reuse already awaited coroutine")
        # is already reported above; retrieve it so asyncio does not log it a second time.
        task.add_done_callback(_retrieve_outcome)
        try:
            task.get_coro().close()
        except RuntimeError:
            pass  # it ignored GeneratorExit as well; unregistering below still frees the loop
        task.cancel()  # a closed coroutine ends at its next step
        unregister = getattr(asyncio.tasks, "_unregister_task", None)
        if unregister is not None:
            unregister(task)
        else:
            _warn_no_unregister(child.name)


_warned_no_unregister = False


def _warn_no_unregister(child: str) -> None:
    """Say loudly, once per process, that an abandoned task can now hold the loop open."""
    global _warned_no_unregister
    _log.error("abandon_incomplete", child=child,
               reason="asyncio.tasks._unregister_task is missing on this Python: an abandoned "
                      "task that ignores cancellation may keep asyncio.run from returning")
    if not _warned_no_unregister:
        _warned_no_unregister = True
        warnings.warn(
            "ron_kernel: asyncio.tasks._unregister_task is missing on this Python "
            f"({sys.version.split()[0]}); abandoned children may hold the event loop open",
            RuntimeWarning, stacklevel=2)


def _retrieve_outcome(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def resolve_child(root: Supervisor, path: str) -> tuple[Supervisor, str] | None:
    """The supervisor holding the child at ``path`` and its name there, or ``None``.

    A child of ``root`` named exactly ``path`` wins; otherwise ``outer/inner/worker`` walks
    nested supervisors (children that are themselves a :class:`Supervisor`).
    """
    if path in root.snapshot():
        return root, path
    sup = root
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part not in sup.snapshot():
            return None
        if i == len(parts) - 1:
            return sup, part
        nested = sup.child_supervisor(part)
        if nested is None:
            return None
        sup = nested
    return None  # pragma: no cover - the loop always returns


def known_names(root: Supervisor, prefix: str = "", _depth: int = 0) -> list[str]:
    """Every addressable child path of the tree under ``root`` (nested as ``outer/inner``)."""
    out: list[str] = []
    for name in root.snapshot():
        out.append(prefix + name)
        nested = root.child_supervisor(name)
        if nested is not None and _depth < 16:
            out.extend(known_names(nested, f"{prefix}{name}/", _depth + 1))
    return out
