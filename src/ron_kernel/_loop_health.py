"""Event-loop health: a lag sampler, a blocked-loop watchdog thread, and a task dump.

Three small pieces, all owned by one :class:`LoopHealth` per kernel (the task dump is a plain
function):

* **Lag sampler** (in the loop). A timer callback every ``interval`` (0.5 s) measures how late
  the loop ran it: ``event_loop_lag_seconds`` (histogram) and ``event_loop_lag_max_seconds``
  (gauge: the worst sample of the last ``window``, 60 s). The same samples give ``/status`` its
  p50/p99.
* **Watchdog** (a daemon thread). It looks at the loop thread's innermost frame
  (``sys._current_frames()``). A loop waiting for I/O (asyncio: in the selector's ``select``
  under ``_run_once``; uvloop: back in the frame that started it) is healthy: it is looked at
  again ``threshold / 2`` later and never woken. A loop running a callback is sent one probe
  (``loop.call_soon_threadsafe``, the one thread-safe entry into a loop, and the only call the
  thread makes into it) and looked at again ``0.8 * threshold`` later (each look at a busy loop
  costs it a GIL hand-off). When a probe has waited ``threshold`` without running, the thread
  samples the loop thread's stack, counts the block and logs one ``loop_blocked`` line; when the
  probe finally runs it logs ``loop_unblocked`` with the total.

A healthy loop runs a probe within milliseconds, so stalls shorter than ``threshold`` are never
reported, and a block is reported between ``threshold`` and ``1.5 * threshold`` after it began
when the loop was idle before it (``1.8 * threshold`` at worst from a busy loop). Durations are
measured from the last sign of life before the block (an idle-stack observation or a probe that
ran), so they are an upper bound, typically a few tens of milliseconds over. A call that holds
the GIL for its whole duration (a C extension that does not release it) cannot be seen while it
runs: the watchdog reports it once the call returns, with the stack at that moment. A loop
closed without :meth:`LoopHealth.stop` ends the thread quietly (the probe is refused).

This module imports nothing of the kernel but the logger: the counter families it writes are
handed in (:class:`LoopCounters`).
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
import functools
import importlib.util
import math
import os
import selectors
import sys
import sysconfig
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from types import CodeType, FrameType
from typing import Any, Protocol, TypedDict

from ._logging import get_logger

DEFAULT_INTERVAL = 0.5
"""Seconds between two lag samples."""

DEFAULT_THRESHOLD = 0.1
"""Seconds a watchdog probe may wait in the loop before the loop counts as blocked."""

DEFAULT_WINDOW = 60.0
"""Seconds of lag samples kept for the max gauge and the ``/status`` percentiles."""

MAX_STACK = 12
"""Frames kept in a ``loop_blocked`` stack and in each task of the task dump."""

BUSY_RECHECK = 0.8
"""A busy loop is sent a probe every ``BUSY_RECHECK * threshold`` (an idle one is only looked
at, every ``threshold / 2``). A block is then reported at most ``(1 + BUSY_RECHECK) *
threshold`` after it began."""

STOP_TIMEOUT = 0.5
"""Seconds :meth:`LoopHealth.stop` waits for the watchdog thread (it normally takes < 1 ms)."""

# ----------------------------------------------------------------------------- counters


class _Histogram(Protocol):
    def observe(self, *labels: str, value: float) -> None: ...


class _Gauge(Protocol):
    def set(self, *labels: str, value: float) -> None: ...


class _Counter(Protocol):
    def inc(self, *labels: str, amount: float = 1.0) -> None: ...


class LoopCounters(Protocol):
    """The four families loop health writes (the kernel hands in its counters object)."""

    @property
    def event_loop_lag_seconds(self) -> _Histogram:
        """Histogram (no labels) of sampled lags, buckets 1 ms .. 10 s."""

    @property
    def event_loop_lag_max_seconds(self) -> _Gauge:
        """Gauge: the worst sampled lag over the last window."""

    @property
    def event_loop_blocked_total(self) -> _Counter:
        """Counter: blocks detected."""

    @property
    def event_loop_blocked_seconds_total(self) -> _Counter:
        """Counter: total seconds the detected blocks lasted."""


# ----------------------------------------------------------------------------- stacks


def _dir(path: str) -> str:
    return os.path.normcase(os.path.realpath(path)) + os.sep


def _package_dir(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)  # finds, does not import
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    return _dir(os.path.dirname(origin)) if origin else None


# The loop's own machinery: the kernel and uvloop (a third-party package, but no user code).
_MACHINERY = tuple(d for d in (_dir(os.path.dirname(os.path.abspath(__file__))),
                               _package_dir("uvloop")) if d is not None)
_STDLIB_DIRS = tuple({_dir(sysconfig.get_paths()[name]) for name in ("stdlib", "platstdlib")})
_THIRD_PARTY = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)


@functools.lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    """Whether frames of ``filename`` are user code: not the kernel, uvloop, asyncio, stdlib.

    Third-party packages (``site-packages``) count as user code: a blocking call usually lives
    in one (a sync HTTP client, a database driver), called from the application.
    """
    if not filename or filename.startswith("<"):
        return False  # <frozen ...>, <string>: not a file anyone can open
    path = os.path.normcase(os.path.realpath(filename))
    if path.startswith(_MACHINERY):
        return False
    if any(part in path for part in _THIRD_PARTY):
        return True
    return not path.startswith(_STDLIB_DIRS)


def format_frame(frame: FrameType) -> str:
    """``"file:line function"`` for one frame (absolute file, qualified function name)."""
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} {code.co_qualname}"


def blocked_stack(frame: FrameType | None, limit: int = MAX_STACK) -> list[str]:
    """The loop thread's stack for a ``loop_blocked`` line, **innermost frame first**.

    Frames of asyncio, the rest of the stdlib and ron_kernel are left out when at least one
    frame of user code is on the stack (otherwise every frame is kept, so a loop stuck in the
    kernel or the stdlib still says where). At most ``limit`` frames.
    """
    frames: list[FrameType] = []
    while frame is not None and len(frames) < 256:
        frames.append(frame)
        frame = frame.f_back
    user = [f for f in frames if is_user_file(f.f_code.co_filename)]
    return [format_frame(f) for f in (user or frames)[:limit]]


# ----------------------------------------------------------------------------- idle loops


def _idle_select_codes() -> frozenset[CodeType]:
    codes = set()
    for name in ("SelectSelector", "PollSelector", "EpollSelector", "DevpollSelector",
                 "KqueueSelector"):
        cls = getattr(selectors, name, None)
        select = getattr(cls, "select", None)
        code = getattr(select, "__code__", None)
        if code is not None:
            codes.add(code)
    return frozenset(codes)


# asyncio's own loop waits in a selector's select() called by BaseEventLoop._run_once.
_SELECT_CODES = _idle_select_codes()
_RUN_ONCE_CODE: CodeType = asyncio.base_events.BaseEventLoop._run_once.__code__  # type: ignore[attr-defined]
_HANDLE_RUN_CODE: CodeType = asyncio.events.Handle._run.__code__


def _loop_anchor() -> FrameType | None:
    """The Python frame under a loop written in C (uvloop), seen from a running task.

    A task's outermost coroutine frame is called from the loop: from ``Handle._run`` in
    asyncio's pure-Python loop, or straight from C in uvloop, whose ``f_back`` is then the
    frame that called ``run_until_complete``/``run_forever``. While such a loop waits for
    I/O, that frame is the innermost Python frame of its thread.
    """
    task = asyncio.current_task()
    frame: FrameType | None = getattr(task.get_coro(), "cr_frame", None) if task else None
    parent = frame.f_back if frame is not None else None
    if parent is None or parent.f_code is _HANDLE_RUN_CODE:
        return None
    return parent


def loop_is_idle(frame: FrameType | None, anchor: FrameType | None = None) -> bool:
    """Whether the loop thread whose innermost frame is ``frame`` is waiting for I/O.

    asyncio's loop: the frame is a selector's ``select`` called by ``_run_once``. A loop in C
    (uvloop): the frame is ``anchor`` (see :func:`_loop_anchor`). Anything else is running a
    callback, which may be the block.
    """
    if frame is None:
        return False
    if anchor is not None and frame is anchor:
        return True
    if frame.f_code in _SELECT_CODES:
        back = frame.f_back
        return back is not None and back.f_code is _RUN_ONCE_CODE
    return False


# ----------------------------------------------------------------------------- the watchdog


@dataclass(slots=True)
class _Episode:
    """One block, from the last sign of life before it to the first one after it."""

    start: float                 # monotonic time the loop was last known responsive
    detected: float              # when the watchdog noticed
    wall: float                  # time.time() of ``start``
    stack: list[str]
    ended: float | None = None   # set by the first probe the loop runs after the block


class LastBlock(TypedDict):
    """The most recent block, as ``/status`` shows it."""

    at: str              # ISO 8601 UTC time the loop was last seen responsive before it
    duration_ms: float   # total (so far, while ``ongoing``)
    ongoing: bool
    stack: list[str]     # innermost user frame first


class LoopHealth:
    """Lag sampler + blocked-loop watchdog for one event loop.

    ``counters`` receives the four ``event_loop_*`` families (see :class:`LoopCounters`).
    ``threshold`` (seconds) is how long the loop may stay unresponsive before it counts as
    blocked; ``interval`` is the lag sampling period; ``window`` the span of the max gauge and
    the percentiles of :meth:`snapshot`. ``logger`` defaults to the kernel's ``loop`` logger.

    :meth:`start` must be called from a task of the loop (it learns what the loop's thread
    looks like while idle); :meth:`stop` from the same thread. Raises ``ValueError`` for a
    threshold, interval or window that is not positive.
    """

    def __init__(self, counters: LoopCounters, *, threshold: float = DEFAULT_THRESHOLD,
                 interval: float = DEFAULT_INTERVAL, window: float = DEFAULT_WINDOW,
                 logger: Any = None) -> None:
        for name, value in (("threshold", threshold), ("interval", interval),
                            ("window", window)):
            if not value > 0:
                raise ValueError(f"loop health {name} must be > 0 seconds, got {value!r}")
        self._counters = counters
        self._threshold = float(threshold)
        self._interval = float(interval)
        self._window = float(window)
        self._log = logger if logger is not None else get_logger("loop")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._anchor: FrameType | None = None
        self._sample_handle: asyncio.TimerHandle | None = None
        self._sample_due = 0.0
        self._samples: deque[tuple[float, float]] = deque()
        # Shared between the loop (probe callback) and the watchdog; the lock is held for
        # microseconds and never across I/O or a call into the loop.
        self._lock = threading.Lock()
        self._alive_at = 0.0                # last time the loop was known responsive
        self._probe_sent: float | None = None
        self._episode: _Episode | None = None
        self._blocks = 0
        self._last_block: LastBlock | None = None
        self._stopping = False
        # The watchdog sleeps by acquiring this held lock with a timeout; stop() and
        # set_threshold() release it to wake it early (cheaper per wake-up than an Event).
        self._wake = _new_wake()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    @property
    def threshold(self) -> float:
        """Seconds of unresponsiveness that count as a block."""
        return self._threshold

    @property
    def running(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` did not."""
        return self._loop is not None

    @property
    def thread(self) -> threading.Thread | None:
        """The watchdog thread while running (a daemon named ``ron-kernel-loop-watchdog``)."""
        return self._thread

    def set_threshold(self, seconds: float) -> None:
        """Change the threshold at once (config reload): the watchdog is woken to use it."""
        if not seconds > 0:
            raise ValueError(f"loop health threshold must be > 0 seconds, got {seconds!r}")
        self._threshold = float(seconds)
        _wake_up(self._wake)

    def start(self) -> None:
        """Start the sampler in the running loop, and the watchdog thread.

        Idempotent. Raises ``RuntimeError`` outside a running loop.
        """
        if self._loop is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._anchor = _loop_anchor()
        now = time.monotonic()
        self._alive_at = now
        self._probe_sent = None
        self._sample_due = now + self._interval
        self._sample_handle = loop.call_later(self._interval, self._sample)
        self._stopping = False
        self._wake = _new_wake()
        self._thread = threading.Thread(target=self._watch, args=(self._wake, loop),
                                        name="ron-kernel-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel the sampler, stop and join the watchdog; report a block that just ended.

        Idempotent. The thread wakes at once and is joined (normally well under a millisecond;
        at most :data:`STOP_TIMEOUT` if it is stuck writing a log line; it is a daemon, so it
        never keeps the process alive either way).
        """
        if self._loop is None:
            return
        if self._sample_handle is not None:
            self._sample_handle.cancel()
            self._sample_handle = None
        self._stopping = True
        _wake_up(self._wake)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(STOP_TIMEOUT)
        self._loop = None
        self._anchor = None
        with self._lock:
            episode, self._episode = self._episode, None
            if episode is not None and episode.ended is None:
                episode.ended = time.monotonic()  # we are on the loop: it runs again
        if episode is not None:
            self._report_unblocked(episode)

    # ------------------------------------------------------------------ in the loop

    def _sample(self) -> None:
        now = time.monotonic()
        lag = now - self._sample_due
        if lag < 0.0:  # timers may fire a hair early (uvloop rounds to the millisecond)
            lag = 0.0
        counters = self._counters
        counters.event_loop_lag_seconds.observe(value=lag)
        samples = self._samples
        samples.append((now, lag))
        cutoff = now - self._window
        while samples[0][0] < cutoff:
            samples.popleft()
        counters.event_loop_lag_max_seconds.set(value=max(s[1] for s in samples))
        self._sample_due = now + self._interval
        loop = self._loop
        if loop is not None:
            self._sample_handle = loop.call_later(self._interval, self._sample)

    def _probe(self) -> None:
        """Run by the loop when the watchdog asks (``call_soon_threadsafe``): it is alive."""
        now = time.monotonic()
        with self._lock:
            self._alive_at = now
            self._probe_sent = None
            episode = self._episode
            if episode is not None and episode.ended is None:
                episode.ended = now  # the watchdog reports it at its next wake-up

    # ------------------------------------------------------------------ in the thread

    def _watch(self, wake: threading.Lock, loop: asyncio.AbstractEventLoop) -> None:
        delay: float | None = self._threshold / 2
        while delay is not None:
            wake.acquire(timeout=delay)  # held already: returns on timeout or _wake_up()
            if self._stopping or self._wake is not wake:  # stopped (and maybe restarted)
                return
            try:
                delay = self._check(loop)
            except Exception as exc:  # an observer never dies silently, nor takes others down
                self._log.error("loop_watchdog_error", reason=repr(exc)[:200])
                delay = self._threshold / 2

    def _check(self, loop: asyncio.AbstractEventLoop) -> float | None:
        """One wake-up of the watchdog; returns the next sleep.

        An idle loop is recognised from its thread's stack and costs nothing more. A busy one
        is sent a probe; the loop counts as blocked once that probe has waited ``threshold``
        (a healthy loop runs it within milliseconds, so shorter stalls are never reported).
        Returns ``None`` when the loop was closed.
        """
        threshold = self._threshold
        period = threshold / 2
        now = time.monotonic()
        finished: _Episode | None = None
        started: _Episode | None = None
        send_probe = False
        with self._lock:
            episode = self._episode
            if episode is not None:
                if episode.ended is None:
                    return period  # still blocked: reported once, the probe is waiting
                finished, self._episode = episode, None
            else:
                frame = sys._current_frames().get(self._loop_thread)
                if loop_is_idle(frame, self._anchor):
                    self._alive_at = now
                elif self._probe_sent is not None and now - self._probe_sent >= threshold:
                    # Sampled under the lock: the loop cannot answer the probe meanwhile, so
                    # the stack is the blocking code, not a loop that just resumed.
                    age = now - self._alive_at
                    started = self._episode = _Episode(
                        start=self._alive_at, detected=now, wall=time.time() - age,
                        stack=blocked_stack(frame))
                elif self._probe_sent is None:
                    self._probe_sent = now
                    send_probe = True
                del frame
        if finished is not None:
            self._report_unblocked(finished)
            return period
        if send_probe or started is not None:
            try:
                # thread-safe by contract; raises once the loop is closed
                loop.call_soon_threadsafe(self._probe)
            except RuntimeError:
                return None  # closed without stop(): not a block, just the end
        if started is not None:
            self._report_blocked(started)
            return period
        if send_probe:
            # A healthy loop has run it long before this; each wake-up while the loop is busy
            # costs it a GIL hand-off, so busy loops are looked at less often than idle ones.
            return threshold * BUSY_RECHECK
        sent = self._probe_sent
        if sent is not None:  # the probe waits: look again when it reaches the threshold
            return max(sent + threshold - time.monotonic() + 0.0005, 0.0005)
        return period

    def _report_blocked(self, episode: _Episode) -> None:
        duration = episode.detected - episode.start
        self._blocks += 1
        self._counters.event_loop_blocked_total.inc()
        self._last_block = {"at": _iso(episode.wall), "duration_ms": _ms(duration),
                            "ongoing": True, "stack": episode.stack}
        self._log.warning("loop_blocked", duration_ms=_ms(duration),
                          threshold_ms=_ms(self._threshold), stack=episode.stack)

    def _report_unblocked(self, episode: _Episode) -> None:
        assert episode.ended is not None
        duration = episode.ended - episode.start
        self._counters.event_loop_blocked_seconds_total.inc(amount=duration)
        self._last_block = {"at": _iso(episode.wall), "duration_ms": _ms(duration),
                            "ongoing": False, "stack": episode.stack}
        self._log.info("loop_unblocked", duration_ms=_ms(duration), stack=episode.stack)

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> dict[str, Any]:
        """The ``loop`` section of ``/status``: lag percentiles, block count, the last block.

        ``lag_p50_ms`` / ``lag_p99_ms`` / ``lag_max_ms`` are over the samples of the last
        ``window_s`` seconds (``None`` before the first sample); ``blocks`` counts every block
        since start; ``last_block`` is ``None`` or a :class:`LastBlock`.
        """
        now = time.monotonic()
        lags = sorted(lag for at, lag in self._samples if at >= now - self._window)
        return {
            "enabled": True,
            "threshold_ms": _ms(self._threshold),
            "interval_s": self._interval,
            "window_s": self._window,
            "samples": len(lags),
            "lag_p50_ms": _ms(_rank(lags, 0.50)) if lags else None,
            "lag_p99_ms": _ms(_rank(lags, 0.99)) if lags else None,
            "lag_max_ms": _ms(lags[-1]) if lags else None,
            "blocks": self._blocks,
            "last_block": self._last_block,
        }


def _new_wake() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


def _wake_up(lock: threading.Lock) -> None:
    try:
        lock.release()
    except RuntimeError:
        pass  # already released, the watchdog has not slept again yet: it is awake


def _rank(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted, non-empty list."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


# ----------------------------------------------------------------------------- the task dump


class TaskInfo(TypedDict):
    """One task of ``GET /debug/tasks``."""

    name: str
    child: str | None   # the supervised child owning it, from the supervisor's task name
    coro: str           # qualified name of the task's coroutine
    state: str          # running | pending | cancelling | done | cancelled | failed
    stack: list[str]    # "file:line function", innermost frame first


def task_child(name: str) -> str | None:
    """The supervised child a task belongs to, from its name, or ``None``.

    The supervisor names a child's task ``"<supervisor>/<child>"`` and its restart timer
    ``"<supervisor>/<child>:restart"``; tasks a child creates itself keep their own names.
    """
    supervisor, sep, child = name.partition("/")
    if not sep or not supervisor or not child:
        return None
    return child.removesuffix(":restart") or None


def task_stack(task: asyncio.Task[Any], limit: int = MAX_STACK) -> list[str]:
    """Where ``task`` is, innermost frame first: its coroutine and everything it awaits.

    ``task.get_stack()`` stops at the task's outermost coroutine while it is suspended; this
    follows the ``await`` chain (``cr_await``, ``ag_await``, ``gi_yieldfrom``) down to the
    innermost coroutine, which is where the task is parked. Falls back to ``get_stack()``
    (e.g. the traceback of a failed task) when the coroutine has no frame.
    """
    frames: list[FrameType] = []
    obj: Any = task.get_coro()
    while obj is not None and len(frames) < 256:
        frame = _first(obj, "cr_frame", "ag_frame", "gi_frame")
        if frame is None:
            break
        frames.append(frame)
        obj = _first(obj, "cr_await", "ag_await", "gi_yieldfrom")
    if not frames:
        frames = task.get_stack(limit=limit)
    frames.reverse()
    return [format_frame(f) for f in frames[:limit]]


def _first(obj: Any, *names: str) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _state(task: asyncio.Task[Any], current: asyncio.Task[Any] | None) -> str:
    if task is current:
        return "running"
    if task.done():
        if task.cancelled():
            return "cancelled"
        return "failed" if task.exception() is not None else "done"
    return "cancelling" if task.cancelling() else "pending"


def dump_tasks(loop: asyncio.AbstractEventLoop | None = None) -> list[TaskInfo]:
    """Every unfinished task of ``loop`` (default: the running one), supervised children first.

    Call it in the loop's thread. Each entry is a :class:`TaskInfo`.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    current = asyncio.current_task(loop)
    out: list[TaskInfo] = []
    for task in asyncio.all_tasks(loop):
        coro = task.get_coro()
        out.append({
            "name": task.get_name(),
            "child": task_child(task.get_name()),
            "coro": getattr(coro, "__qualname__", None) or type(coro).__name__,
            "state": _state(task, current),
            "stack": task_stack(task),
        })
    out.sort(key=lambda t: (t["child"] is None, t["name"]))
    return out
