"""What a supervised child sees (ChildContext), what the supervisor reports (ChildInfo), and
the supervisor's private record of one child."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, NotRequired, TypedDict

from typing_extensions import TypeVar

from ._errors import Canceled
from ._supervisor_policy import ChildState, RestartType, RestartWindow
from ._text import cap, printable

if TYPE_CHECKING:
    from ._bus import Bus
    from ._events import KernelEvent
    from ._health import HealthState

current_task = asyncio.current_task

C = TypeVar("C", default=Any)
"""What ``ctx.config`` is: ``Config[M]`` under ``Kernel(app_config=M)``."""
T = TypeVar("T")

# Tracebacks kept for /status are trimmed to their tail: the frames nearest the raise matter.
TRACEBACK_LINES = 20
TRACEBACK_CHARS = 4096


class ChildContext(Generic[C]):
    """What a supervised child receives on each start.

    * ``name`` — the child's name in its supervisor.
    * ``shutdown`` — an :class:`asyncio.Event` set when the child must drain and return.
      A fresh event is made for every (re)start.
    * ``bus`` — the kernel bus (``Bus[KernelEvent]``); ``RuntimeError`` under a supervisor
      built without one.
    * ``config`` — the *current* config snapshot, read again on every access (under
      ``Kernel(app_config=M)`` it is a ``Config[M]``: ``ctx.config.app`` is your ``M``).
    * :meth:`ready` — report readiness to the supervisor's :class:`~ron_kernel.HealthState`.
    * :meth:`sleep`, :meth:`wait` — waits that end at shutdown instead of holding the drain.
    * :meth:`config_changes` — each applied reload, as an async iterator.
    * :meth:`request_shutdown` — ask the kernel to drain (returns at once).
    * :meth:`time_left` — seconds left to drain once shutdown was requested.
    * :meth:`listen_socket` — a listening socket the kernel bound (``kernel.listen``), shared
      with every worker process.
    """

    name: str
    """The child's name in its supervisor."""
    shutdown: asyncio.Event
    """Set when the child must drain and return (a fresh event per start)."""
    depends_on: tuple[str, ...]
    """The siblings this child started after (``supervise(..., depends_on=...)``)."""

    __slots__ = (
        "_bus",
        "_changes",
        "_config_source",
        "_health",
        "_listen",
        "_loop",
        "_on_ready",
        "_request_shutdown",
        "_stop_by",
        "_stopped",
        "_waiting",
        "depends_on",
        "name",
        "shutdown",
    )

    def __init__(self, name: str, *, bus: Bus[KernelEvent] | None = None,
                 config_source: Callable[[], C] | None = None,
                 health: HealthState | None = None,
                 on_ready: Callable[[bool], None] | None = None,
                 changes: Callable[[], AsyncIterator[C]] | None = None,
                 request_shutdown: Callable[[str], None] | None = None,
                 depends_on: tuple[str, ...] = (),
                 listen_socket: Callable[[str], socket.socket] | None = None) -> None:
        self.name = name
        self.shutdown = asyncio.Event()
        self.depends_on = depends_on
        self._bus = bus
        self._config_source = config_source
        self._health = health
        self._on_ready = on_ready
        self._changes = changes
        self._request_shutdown = request_shutdown
        self._listen = listen_socket
        self._stop_by: float | None = None
        self._waiting: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: set[asyncio.Task[Any]] = set()

    @property
    def bus(self) -> Bus[KernelEvent]:
        """The kernel bus. Raises ``RuntimeError`` when the supervisor has none."""
        bus = self._bus
        if bus is None:
            raise RuntimeError(f"child {self.name!r} has no bus: its supervisor was built "
                               "without one (Supervisor(bus=...), or run it under a Kernel)")
        return bus

    @property
    def config(self) -> C:
        """The current config snapshot (``None`` when the supervisor was given none)."""
        source = self._config_source
        return source() if source is not None else None  # type: ignore[return-value]

    def ready(self, ok: bool = True) -> None:
        """Mark this child ready (or not, ``ok=False``) in HealthState; never blocks.

        A crash marks the child not ready again until it calls ``ready()`` after its restart.
        """
        if self._health is not None:
            self._health.set(self.name, ok)
        if self._on_ready is not None:
            self._on_ready(bool(ok))

    def time_left(self) -> float | None:
        """Seconds left to finish draining, or ``None`` while no shutdown was requested."""
        if self._stop_by is None:
            return None
        return max(0.0, self._stop_by - asyncio.get_running_loop().time())

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``; ``True`` when the time passed, ``False`` when shutdown came first.

        ``while await ctx.sleep(1.0): ...`` is a loop that ends at shutdown. No task per call.
        """
        if seconds < 0 or seconds != seconds:
            raise ValueError(f"sleep needs seconds >= 0, got {seconds!r}")
        try:
            await self.wait(asyncio.sleep(seconds))
        except Canceled:
            return False
        return True

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` and return its result, or raise ``Canceled`` at shutdown.

        At shutdown the awaitable is cancelled cleanly (a coroutine gets ``CancelledError`` at
        its ``await``; ``rx.recv()``, ``rx.recv_many()`` and ``mailbox.recv()`` consume nothing
        when cancelled), then :class:`~ron_kernel.errors.Canceled` is raised here. If shutdown
        was already requested it is not awaited at all. No task is created per call: the
        shutdown cancels the waiting task itself, and the cancellation is taken back.
        """
        if self._stop_by is not None:  # shutdown was requested (cheaper than Event.is_set)
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started: no "was never awaited" warning
            raise Canceled(f"child {self.name!r} is shutting down")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = current_task(loop)  # the loop given: no running-loop lookup per call
        if task is None:
            raise RuntimeError("ctx.wait() must be awaited inside a task")
        waiting = self._waiting
        waiting.append(task)
        # Everything inline: this wraps per-message receives, so each call counts.
        try:
            return await awaitable
        except asyncio.CancelledError:
            self._take_back(task)
            raise
        finally:
            if waiting and waiting[-1] is task:
                waiting.pop()
            elif task in waiting:
                waiting.remove(task)

    def _take_back(self, task: asyncio.Task[Any]) -> None:
        """A cancellation that shutdown caused becomes ``Canceled``; any other propagates."""
        if task in self._stopped:
            self._stopped.discard(task)
            task.uncancel()
            raise Canceled(f"child {self.name!r} is shutting down") from None

    async def config_changes(self) -> AsyncIterator[C]:
        """Yield the new snapshot after each applied reload; ends at shutdown.

        ``async for cfg in ctx.config_changes(): apply(cfg.app)``. Reloads applied while the
        child is busy are coalesced (it gets the latest).
        """
        if self._changes is None:
            raise RuntimeError(f"child {self.name!r}: its supervisor has no reloading config "
                               "(run it under a Kernel, or give Supervisor(config_changes=...))")
        changes = self._changes()
        try:
            while True:
                try:
                    yield await self.wait(anext(changes))
                except (Canceled, StopAsyncIteration):
                    return
        finally:
            closer = getattr(changes, "aclose", None)
            if closer is not None:
                await closer()

    def dependencies_ready(self) -> bool:
        """Whether every sibling in :attr:`depends_on` is ready right now (readiness state)."""
        health = self._health
        if health is None or not self.depends_on:
            return True
        services = health.snapshot()["services"]
        return all(services.get(name) is True for name in self.depends_on)

    def request_shutdown(self, reason: str = "") -> None:
        """Ask the kernel (or, without one, this child's supervisor) to drain; returns at once."""
        if self._request_shutdown is None:
            raise RuntimeError(f"child {self.name!r}: nothing to ask for a shutdown")
        self._request_shutdown(reason or f"requested by child {self.name!r}")

    def listen_socket(self, name: str) -> socket.socket:
        """The listening socket ``kernel.listen(name, addr)`` bound, as a duplicate you own.

        The kernel keeps the original, and worker processes inherit it: every worker accepts
        on the same port. Serve on the duplicate and close it when done -- aiohttp does both
        with ``web.SockSite(runner, ctx.listen_socket("web"))`` -- so a restarted child gets a
        fresh one. Raises ``KeyError`` naming the known sockets for an unknown name, and
        ``RuntimeError`` under a supervisor without a kernel.
        """
        if self._listen is None:
            raise RuntimeError(f"child {self.name!r}: no listening sockets here (run it under "
                               "a Kernel and bind them with kernel.listen(name, addr))")
        return self._listen(name)

    def _request_stop(self, stop_by: float) -> None:
        if self._stop_by is None or stop_by < self._stop_by:
            self._stop_by = stop_by
        self.shutdown.set()
        # every task parked in ctx.wait() is cancelled now; wait() takes it back as Canceled
        waiting, self._waiting = self._waiting, []
        self._stopped.update(waiting)
        for task in waiting:
            task.cancel()

    def __repr__(self) -> str:
        return f"ChildContext(name={self.name!r}, shutdown={self.shutdown.is_set()})"


class ChildInfo(TypedDict):
    """One child in :meth:`Supervisor.snapshot` (a plain, JSON-serialisable dict).

    ``uptime`` is in seconds (``None`` unless running); ``next_restart_at`` and
    ``next_probe_at`` are wall-clock Unix times (``None`` unless a restart, or a quarantine
    probe, is scheduled); ``last_traceback`` keeps the last 20 lines / 4 KB; ``depends_on``
    lists the siblings it starts after; ``quarantine_cooldown`` is the current cool-down in
    seconds while quarantined with probes on. A child that is itself a supervisor also has
    ``strategy`` and ``children`` (its own snapshot), so the whole tree is one value.
    """

    name: str
    state: ChildState
    restart: RestartType
    restarts: int
    restarts_in_window: int
    attempt: int
    last_reason: str | None
    last_traceback: str | None
    uptime: float | None
    next_restart_at: float | None
    depends_on: list[str]
    next_probe_at: float | None
    quarantine_cooldown: float | None
    strategy: NotRequired[str]
    children: NotRequired[dict[str, ChildInfo]]


ChildFn = Callable[[ChildContext[Any]], Awaitable[None]]


class NotAwaitableChild(TypeError):
    """A child callable returned something that cannot be awaited (a plain ``def``?)."""


def format_traceback(exc: BaseException) -> str:
    """``exc``'s whole formatted traceback, always encodable; never raises.

    Formatted once per crash: the log line carries it whole (capped by the logger) and
    ``/status`` keeps its tail (:func:`trimmed_traceback`).
    """
    if isinstance(exc, ChildFailure):
        # where it really failed (a worker process's own traceback), or just how it ended:
        # the frames of the parent's relay would say nothing about it
        return printable((exc.detail or exc.reason).rstrip("\n"))
    try:
        return printable("".join(traceback.format_exception(exc)).rstrip("\n"))
    except Exception:  # a traceback that cannot be formatted is no reason to stop supervising
        return f"<traceback of {type(exc).__name__} could not be formatted>"


def trimmed_traceback(exc: BaseException, text: str | None = None) -> str:
    """The tail of ``exc``'s formatted traceback (or of ``text``): at most 20 lines and 4 KB."""
    full = format_traceback(exc) if text is None else text
    tail = "\n".join(full.splitlines()[-TRACEBACK_LINES:])
    return tail[-TRACEBACK_CHARS:]


_current_child: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ron_kernel_current_child", default=None)


def set_current_child(name: str) -> None:
    """Mark the running task (and the tasks it starts) as belonging to child ``name``."""
    _current_child.set(name)


def current_child() -> str | None:
    """The supervised child the running code belongs to (tasks it starts inherit it)."""
    return _current_child.get()


class ChildFailure(Exception):
    """A child's crash with an exact reason, raised by the kernel's own children.

    ``crash_reason`` reports ``reason`` as it is (``"exit: signal 9 (SIGKILL)"``,
    ``"heartbeat timeout"``) instead of ``"panic: <type>: <message>"``; ``detail`` is what the
    crash log line and ``/status`` show as the traceback (a worker process's own, when it sent
    one; else the reason).
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class ChildExit(Exception):
    """A child raised ``SystemExit`` or ``KeyboardInterrupt``: a crash of that child.

    The original exception is ``.exit`` (and ``__cause__``); it never reaches the event loop, so
    a child cannot end the process.
    """

    def __init__(self, exit: SystemExit | KeyboardInterrupt) -> None:
        super().__init__(f"{type(exit).__name__}: {_safe_str(exit)}")
        self.exit = exit


def is_fatal(exc: BaseException, fatal: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` (or the SystemExit/KeyboardInterrupt it wraps) is one of ``fatal``.

    A child that returned no awaitable is always fatal.
    """
    if isinstance(exc, NotAwaitableChild):
        return True
    if isinstance(exc, ChildExit):
        return isinstance(exc.exit, fatal)
    return isinstance(exc, fatal)


def _safe_str(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return f"<{type(exc).__name__}.__str__ failed>"
    return text if isinstance(text, str) else repr(text)


def crash_reason(exc: BaseException | None) -> str:
    """The structured reason of ``ServiceCrashed``: ``"panic: Type: message"`` or ``"exited"``.

    Always encodable (lone surrogates escaped) and at most :data:`~ron_kernel._text.
    MAX_REASON_CHARS` long (the middle of a huge message is cut, saying how much).
    """
    if exc is None:
        return "exited"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, ChildFailure):
        return cap(printable(exc.reason))
    if isinstance(exc, ChildExit):
        exc = exc.exit
    message = _safe_str(exc)
    name = type(exc).__name__
    if isinstance(exc, SystemExit):
        message = f"exit status {exc.code!r}" if message else "exit"
    text = f"panic: {name}: {message}" if message else f"panic: {name}"
    return cap(printable(text))


class Pending:
    """A scheduled restart: the task waiting out the backoff, and the children it restarts."""

    __slots__ = ("crashed", "due", "members", "task")

    def __init__(self, due: float) -> None:
        self.due = due
        self.members: list[ChildRecord] = []
        self.crashed: set[str] = set()
        self.task: asyncio.Task[None] | None = None


class ChildRecord:
    """The supervisor's private bookkeeping for one child (spec + runtime state)."""

    __slots__ = (
        "attempt", "cooldown", "ctx", "depends_on", "fatal", "fn", "index", "is_ready",
        "last_reason", "last_traceback", "name", "pending", "probe_at", "probe_task",
        "probing", "reports_ready", "restart", "restarts", "shutdown_timeout", "started_at",
        "state", "stopping", "task", "window",
    )

    def __init__(self, name: str, fn: ChildFn, *, index: int, restart: RestartType,
                 shutdown_timeout: float, fatal: tuple[type[BaseException], ...],
                 window: RestartWindow, depends_on: tuple[str, ...] = ()) -> None:
        self.name = name
        self.depends_on = depends_on
        self.is_ready = False  # its last ctx.ready() said ok (reset on every start)
        self.cooldown = 0.0  # current quarantine cool-down (doubles per failed probe)
        self.probe_at: float | None = None
        self.probe_task: asyncio.Task[None] | None = None
        self.probing = False
        self.fn = fn
        self.index = index
        self.restart: RestartType = restart
        self.shutdown_timeout = shutdown_timeout
        self.fatal = fatal
        self.window = window
        self.state: ChildState = "stopped"
        self.task: asyncio.Task[None] | None = None
        self.ctx: ChildContext[Any] | None = None
        self.pending: Pending | None = None
        self.stopping = False
        self.reports_ready = False
        self.attempt = 0
        self.restarts = 0
        self.started_at: float | None = None
        self.last_reason: str | None = None
        self.last_traceback: str | None = None

    def alive(self) -> bool:
        """True while a task of this child is running (or about to)."""
        return self.task is not None and not self.task.done()
