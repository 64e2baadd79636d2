"""What a supervised child sees (ChildContext), what the supervisor reports (ChildInfo), and
the supervisor's private record of one child."""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypedDict

from ._supervisor_policy import ChildState, RestartType, RestartWindow
from ._text import cap, printable

if TYPE_CHECKING:
    from ._bus import Bus
    from ._health import HealthState

# Tracebacks kept for /status are trimmed to their tail: the frames nearest the raise matter.
TRACEBACK_LINES = 20
TRACEBACK_CHARS = 4096


class ChildContext:
    """What a supervised child receives on each start.

    * ``name`` — the child's name in its supervisor.
    * ``shutdown`` — an :class:`asyncio.Event` set when the child must drain and return.
      A fresh event is made for every (re)start.
    * ``bus`` — the kernel bus (``Bus[KernelEvent]``) or ``None``.
    * ``config`` — the *current* config snapshot, read again on every access (so a child that
      reads ``ctx.config`` after a reload sees the new snapshot).
    * :meth:`ready` — report readiness to the supervisor's :class:`~ron_kernel.HealthState`.
    * :meth:`time_left` — seconds left to drain once shutdown was requested.
    """

    name: str
    """The child's name in its supervisor."""
    shutdown: asyncio.Event
    """Set when the child must drain and return (a fresh event per start)."""
    bus: Bus[Any] | None
    """The kernel bus, or ``None`` when the supervisor has none."""

    __slots__ = ("_config_source", "_health", "_on_ready", "_stop_by", "bus", "name", "shutdown")

    def __init__(self, name: str, *, bus: Bus[Any] | None = None,
                 config_source: Callable[[], Any] | None = None,
                 health: HealthState | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.name = name
        self.shutdown = asyncio.Event()
        self.bus = bus
        self._config_source = config_source
        self._health = health
        self._on_ready = on_ready
        self._stop_by: float | None = None

    @property
    def config(self) -> Any:
        """The current config snapshot (``None`` when the supervisor was given none)."""
        source = self._config_source
        return source() if source is not None else None

    def ready(self, ok: bool = True) -> None:
        """Mark this child ready (or not, ``ok=False``) in HealthState; never blocks.

        A crash marks the child not ready again until it calls ``ready()`` after its restart.
        """
        if self._on_ready is not None:
            self._on_ready()
        if self._health is not None:
            self._health.set(self.name, ok)

    def time_left(self) -> float | None:
        """Seconds left to finish draining, or ``None`` while no shutdown was requested."""
        if self._stop_by is None:
            return None
        return max(0.0, self._stop_by - asyncio.get_running_loop().time())

    def _request_stop(self, stop_by: float) -> None:
        if self._stop_by is None or stop_by < self._stop_by:
            self._stop_by = stop_by
        self.shutdown.set()

    def __repr__(self) -> str:
        return f"ChildContext(name={self.name!r}, shutdown={self.shutdown.is_set()})"


class ChildInfo(TypedDict):
    """One child in :meth:`Supervisor.snapshot` (a plain, JSON-serialisable dict).

    ``uptime`` is in seconds (``None`` unless running); ``next_restart_at`` is wall-clock Unix
    time (``None`` unless a restart is scheduled); ``last_traceback`` keeps the last
    20 lines / 4 KB.
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


ChildFn = Callable[[ChildContext], Awaitable[None]]


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions, partials of them, and objects with ``async __call__``."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - we need the async-ness, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def trimmed_traceback(exc: BaseException) -> str:
    """The tail of ``exc``'s formatted traceback: at most 20 lines and 4 KB, always encodable."""
    try:
        lines = "".join(traceback.format_exception(exc)).splitlines()
    except Exception:
        return f"<traceback of {type(exc).__name__} could not be formatted>"
    text = "\n".join(lines[-TRACEBACK_LINES:])
    return printable(text[-TRACEBACK_CHARS:])


class ChildExit(Exception):
    """A child raised ``SystemExit`` or ``KeyboardInterrupt``: a crash of that child.

    The original exception is ``.exit`` (and ``__cause__``); it never reaches the event loop, so
    a child cannot end the process.
    """

    def __init__(self, exit: SystemExit | KeyboardInterrupt) -> None:
        super().__init__(f"{type(exit).__name__}: {_safe_str(exit)}")
        self.exit = exit


def is_fatal(exc: BaseException, fatal: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` (or the SystemExit/KeyboardInterrupt it wraps) is one of ``fatal``."""
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
        "attempt", "ctx", "fatal", "fn", "index", "last_reason", "last_traceback", "name",
        "pending", "reports_ready", "restart", "restarts", "shutdown_timeout", "started_at",
        "state", "stopping", "task", "window",
    )

    def __init__(self, name: str, fn: ChildFn, *, index: int, restart: RestartType,
                 shutdown_timeout: float, fatal: tuple[type[BaseException], ...],
                 window: RestartWindow) -> None:
        self.name = name
        self.fn = fn
        self.index = index
        self.restart: RestartType = restart
        self.shutdown_timeout = shutdown_timeout
        self.fatal = fatal
        self.window = window
        self.state: ChildState = "stopped"
        self.task: asyncio.Task[None] | None = None
        self.ctx: ChildContext | None = None
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
