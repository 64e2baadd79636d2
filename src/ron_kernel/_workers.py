"""Worker processes as supervised children: the parent's side (docs/WORKERS.md).

``kernel.supervise_workers("web", app="mod:factory", count=N)`` makes a :class:`WorkerPool`
and adds N ordinary children ``web/0`` .. ``web/N-1`` to the root supervisor. Each child's
coroutine (:meth:`WorkerSlot.run`) starts one Python process (``python -m
ron_kernel._worker_main``) with a socketpair channel and the kernel's listening sockets
inherited (``pass_fds``), sends it the validated config snapshot, relays its channel, and
returns or raises when the process ends -- so backoff, restart cap and window, quarantine,
probes, release and the strategies are the supervisor's, unchanged:

* exit while not asked to stop -> ``ChildFailure("exit: status 3: <the worker's own error>")``
  or ``"exit: signal 9 (SIGKILL)"``;
* no pong for ``workers.heartbeat_timeout`` -> killed, ``"heartbeat timeout"``;
* garbage on the channel -> killed, ``"protocol error: ..."``;
* shutdown -> ``{"t": "shutdown"}``, the worker drains its own children and exits; whoever is
  still running at the deadline is killed (``worker_kills_total{reason="drain_deadline"}``).

Up the channel come the workers' events (republished on this kernel's bus as
``<pool>/<index>/<child>``), readiness, heartbeats and, at each scrape, their metrics text.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from ._channel import FrameDecoder, ProtocolError, encode
from ._events import KernelEvent
from ._logging import get_logger
from ._snapshot import encode_config
from ._supervisor_child import ChildContext, ChildFailure
from ._text import cap, printable

if TYPE_CHECKING:
    from ._bus import Bus
    from ._config import Config
    from ._counters import KernelCounters
    from ._health import HealthState
    from ._listen import ListenSockets

__all__ = [
    "DRAIN_MARGIN",
    "EOF_GRACE",
    "SCRAPE_TIMEOUT",
    "START_TIMEOUT_FLOOR",
    "WorkerPool",
    "WorkerSlot",
    "exit_reason",
]

PROTOCOL: Final = 1
"""Version of the channel protocol (the worker refuses another)."""

SCRAPE_TIMEOUT: Final = 1.0
"""Seconds a worker gets to answer a scrape before its last series are served instead."""
CONTROL_TIMEOUT: Final = 30.0
"""Seconds a worker gets to act on a control request for one of its children (a restart
waits for the child to stop) before the request is answered 503."""
CONTROL_ACTIONS: Final = ("release", "restart")
_CONTROL_OUTCOMES: Final = ("ok", "conflict", "not_found", "unavailable")

START_TIMEOUT_FLOOR: Final = 30.0
"""A worker must report up within max(this, 3 x ``workers.heartbeat_timeout``) seconds."""

EOF_GRACE: Final = 1.0
"""Seconds a worker may live on after closing its channel before it is killed."""

DRAIN_MARGIN: Final = 0.25
"""Seconds of the drain a worker leaves for its own exit (it drains for the rest)."""

HIGH_WATER: Final = 4 << 20
"""Bytes queued towards one worker past which it counts as not reading (it is killed)."""

USE_PDEATHSIG = True
"""Whether workers ask Linux to kill them when the parent dies (tests turn it off to prove
the portable fallback: the channel's EOF and the parent-pid watch)."""

_log = get_logger("workers")
_reapers: set[asyncio.Task[Any]] = set()


def exit_reason(returncode: int, error: str | None = None) -> str:
    """``"exit: status N"`` or ``"exit: signal 9 (SIGKILL)"``, with the worker's own error."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown"
        text = f"exit: signal {number} ({name})"
    else:
        text = f"exit: status {returncode}"
    return f"{text}: {error}" if error else text


class WorkerPool:
    """One ``supervise_workers`` call: N worker slots, their readiness, config and metrics.

    The kernel composes it (it never imports the kernel): ``bus``, ``counters`` and
    ``health`` are the parent's; ``config`` returns the current snapshot; ``listeners`` are
    the sockets every worker inherits; ``request_shutdown`` is what a worker's
    ``ctx.request_shutdown`` ends up calling; ``rollback`` re-applies a config (the parent's
    ``ConfigCell.reload``) when a worker rejects a reload.
    """

    def __init__(self, name: str, app: str, count: int, *, bus: Bus[KernelEvent],
                 counters: KernelCounters, health: HealthState,
                 config: Callable[[], Config[Any]], listeners: ListenSockets,
                 request_shutdown: Callable[[str], None],
                 rollback: Callable[[Config[Any]], object]) -> None:
        self.name = name
        self.app = app
        self.bus = bus
        self.counters = counters
        self.health = health
        self.config = config
        self.listeners = listeners
        self.request_shutdown = request_shutdown
        self._rollback = rollback
        self.slots = [WorkerSlot(self, index) for index in range(count)]
        self._wake = asyncio.Event()
        self._rounds: asyncio.Task[None] | None = None
        self._previous: Config[Any] | None = None  # what to roll back to
        self._rolling_back = False
        self._requests = 0
        self._closed = False
        self._ready = False
        health.set(name, False)

    @property
    def count(self) -> int:
        """How many workers this pool runs."""
        return len(self.slots)

    def child(self, index: int) -> Callable[[ChildContext[Any]], Any]:
        """The supervised child that runs worker ``index``."""
        return self.slots[index].run

    def next_id(self) -> int:
        """A request id unique in this pool."""
        self._requests += 1
        return self._requests

    def heartbeat_timeout(self) -> float:
        """``workers.heartbeat_timeout`` now, in seconds (a reload applies at once)."""
        return float(self.config().workers.heartbeat_timeout.total_seconds())

    def labels(self, slot: WorkerSlot) -> tuple[str, str]:
        """The ``(pool, worker)`` label values of a slot's series."""
        return self.name, str(slot.index)

    # ------------------------------------------------------------------ readiness

    def ready_changed(self) -> None:
        """Recompute the pool's readiness: ``workers.min_ready`` (0: all) workers ready."""
        ready = sum(1 for slot in self.slots if slot.ready)
        need = self.config().workers.min_ready or self.count
        ok = ready >= min(need, self.count)
        if ok != self._ready:
            self._ready = ok
            self.health.set(self.name, ok)

    # ------------------------------------------------------------------ config reloads

    def on_config(self, old: Config[Any], new: Config[Any]) -> None:
        """A reload was applied in this process: carry it to every worker (two-phase)."""
        if self._closed:
            return
        if self._previous is None:
            self._previous = old
        self.ready_changed()  # workers.min_ready may have changed
        self.wake_rounds()

    def wake_rounds(self) -> None:
        """Start (or nudge) the task that brings every worker to the current config."""
        self._wake.set()
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.get_running_loop().create_task(
                self._run_rounds(), name=f"workers:{self.name}:config")

    async def _run_rounds(self) -> None:
        while self._wake.is_set() and not self._closed:
            self._wake.clear()
            config = self.config()
            targets = [slot for slot in self.slots
                       if slot.link is not None and slot.link.up and not slot.link.closing
                       and slot.link.version != config.version]
            if targets:
                await self._round(config, targets)
        self._previous = None

    async def _round(self, config: Config[Any], targets: list[WorkerSlot]) -> None:
        """Prepare everywhere, then commit everywhere -- or abort everywhere."""
        payload = encode_config(config)
        asks: list[tuple[WorkerSlot, _Link, int, asyncio.Future[dict[str, Any]]]] = []
        for slot in targets:
            link = slot.link
            assert link is not None
            rid = self.next_id()
            asks.append((slot, link, rid, link.request(
                {"t": "prepare", "id": rid, "config": payload})))
        futures = [future for *_, future in asks]
        await asyncio.wait(futures, timeout=self.heartbeat_timeout())
        rejected: list[tuple[WorkerSlot, str]] = []
        late: list[WorkerSlot] = []
        agreed: list[tuple[_Link, int]] = []
        for slot, link, rid, future in asks:
            if not future.done():
                future.cancel()
                late.append(slot)
            elif future.cancelled() or future.exception() is not None:
                continue  # the worker went away: its replacement starts with this config
            else:
                reply = future.result()
                if reply.get("ok") is True:
                    agreed.append((link, rid))
                else:
                    rejected.append((slot, str(reply.get("error") or "rejected")))
        if rejected:
            for _link, rid in agreed:
                _link.send({"t": "abort", "id": rid})
            self._count_round("rolled_back")
            first = rejected[0]
            _log.error("workers_config_rejected", pool=self.name, version=config.version,
                       worker=first[0].name, reason=first[1],
                       rejected=[slot.name for slot, _ in rejected],
                       action="kill" if self._rolling_back else "roll back")
            if self._rolling_back or self._previous is None:
                # The previous config is refused too: those workers cannot be reasoned with.
                self._rolling_back = False
                for slot, why in rejected:
                    slot.fail(f"config rejected: {why}", "config")
                return
            self._rolling_back = True
            previous, self._previous = self._previous, None
            self._rollback(previous)  # applied as a new version: the loop sends it next
            return
        for link, rid in agreed:
            link.send({"t": "commit", "id": rid})
            link.version = config.version
        for slot in late:
            slot.fail("heartbeat timeout", "config_timeout")
        self._rolling_back = False
        self._count_round("committed")
        _log.info("workers_config_applied", pool=self.name, version=config.version,
                  workers=len(agreed), late=[slot.name for slot in late])

    def _count_round(self, outcome: str) -> None:
        self.counters.worker_config_rounds_total.inc(self.name, outcome)

    # ------------------------------------------------------------------ metrics

    async def scrape(self) -> Sequence[str]:
        """Every worker's series (fresh, or the last ones of a worker that cannot answer)."""
        texts = await asyncio.gather(*(slot.scrape() for slot in self.slots))
        return [text for text in texts if text]

    # ------------------------------------------------------------------ control

    def forward_control(self, action: str, path: str) -> Awaitable[dict[str, Any]] | None:
        """Act on ``path`` = ``<pool>/<i>/<child>`` in worker ``i`` (``release`` or
        ``restart``, as ``POST /control/<action>/<path>``), or ``None`` when ``path`` is not
        a child of one of this pool's workers."""
        for slot in self.slots:
            if path.startswith(slot.prefix) and len(path) > len(slot.prefix) \
                    and action in CONTROL_ACTIONS:
                return slot.control(action, path[len(slot.prefix):])
        return None

    # ------------------------------------------------------------------ introspection

    def annotate(self, tree: dict[str, Any]) -> None:
        """Put each worker's own children under its entry of the root supervisor's snapshot
        (``children``, as a nested supervisor's), so ``/status`` and the page show the tree."""
        for slot in self.slots:
            entry = tree.get(slot.name)
            children = slot.children()
            if isinstance(entry, dict) and children:
                entry["children"] = children

    def status(self) -> dict[str, Any]:
        """The pool for ``/status``: app, readiness and each worker's process."""
        return {
            "app": self.app,
            "count": self.count,
            "min_ready": self.config().workers.min_ready or self.count,
            "ready": sum(1 for slot in self.slots if slot.ready),
            "workers": {str(slot.index): slot.status() for slot in self.slots},
        }

    async def close(self) -> None:
        """Stop carrying reloads (the kernel's shutdown; the workers stop as children)."""
        self._closed = True
        task, self._rounds = self._rounds, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class WorkerSlot:
    """Worker ``index`` of a pool: its current process and link, its last series."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.name = f"{pool.name}/{index}"
        self.prefix = self.name + "/"
        self.link: _Link | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = False
        # the series exists from the start: a worker that never gets ready is a 0, not absent
        pool.counters.worker_ready.set(*pool.labels(self), value=0.0)
        self.metrics: str | None = None
        self.metrics_at: float | None = None
        self.last_exit: str | None = None
        self._starts = 0

    # ------------------------------------------------------------------ the child

    async def run(self, ctx: ChildContext[Any]) -> None:
        """Start the worker process and supervise it until it ends (see the module doc)."""
        loop = asyncio.get_running_loop()
        self._starts += 1
        parent_end, child_end = socket.socketpair()
        try:
            process = self._spawn(child_end)
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.process = process
        link = _Link(self, process)
        exited = loop.create_task(_wait_exit(process), name=f"{self.name}:exit")
        watch: asyncio.Task[None] | None = None
        stop: asyncio.Task[bool] | None = None
        try:
            await loop.create_unix_connection(lambda: link, sock=parent_end)
            self.link = link
            link.send(self._init(loop))
            watch = loop.create_task(self._watch(link), name=f"{self.name}:heartbeat")
            stop = loop.create_task(ctx.shutdown.wait(), name=f"{self.name}:stop")
            await asyncio.wait((exited, stop, link.failed), return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                if ctx.shutdown.is_set():
                    return
                # what it said before it went (a failed start) is still in the socket: read it
                await asyncio.wait((link.eof,), timeout=EOF_GRACE)
                reason = exit_reason(exited.result(), link.error)
                self.last_exit = reason
                raise ChildFailure(reason, link.detail)
            if link.failed.done():
                reason, kind = link.failed.result()
                self._kill(process, kind)
                await asyncio.wait((exited,), timeout=EOF_GRACE)
                self.last_exit = reason
                raise ChildFailure(reason, link.detail)
            await self._drain(ctx, link, process, exited)
        finally:
            for task in (watch, stop):
                if task is not None:
                    task.cancel()
            self._forget(link)
            link.close()
            self._kill(process, "cancelled")  # only if still running: our task was cancelled
            if not exited.done():
                _reapers.add(exited)
                exited.add_done_callback(_reapers.discard)

    def _spawn(self, child_end: socket.socket) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "ron_kernel._worker_main",
                "--channel", str(child_end.fileno()), "--parent", str(os.getpid()),
                "--name", self.name]
        if not USE_PDEATHSIG:
            argv.append("--no-pdeathsig")
        fds = [child_end.fileno(), *(sock.fileno() for _, sock in self.pool.listeners.items())]
        return subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL, close_fds=True)

    def _init(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        flavor = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        return {
            "t": "init", "proto": PROTOCOL, "pool": self.pool.name, "index": self.index,
            "name": self.name, "app": self.pool.app, "config": encode_config(self.pool.config()),
            "sys_path": list(sys.path), "loop": flavor,
            "sockets": {name: sock.fileno() for name, sock in self.pool.listeners.items()},
        }

    async def _watch(self, link: _Link) -> None:
        """Ping the worker; a silent one fails (heartbeat) -- or, before it is up, start."""
        loop = asyncio.get_running_loop()
        spawned = loop.time()
        ping = 0
        while not link.failed.done():
            timeout = self.pool.heartbeat_timeout()
            now = loop.time()
            if not link.up:
                if now - spawned > max(START_TIMEOUT_FLOOR, 3 * timeout):
                    link.fail("start timeout", "start_timeout")
                    return
                await asyncio.sleep(0.05)
                continue
            if now - link.last_pong > timeout:
                link.fail("heartbeat timeout", "heartbeat")
                return
            ping += 1
            link.send({"t": "ping", "n": ping})
            await asyncio.sleep(min(1.0, max(0.02, timeout / 4)))

    async def _drain(self, ctx: ChildContext[Any], link: _Link,
                     process: subprocess.Popen[bytes], exited: asyncio.Task[int]) -> None:
        """Ask the worker to drain within what is left of ours; kill it at the deadline."""
        left = ctx.time_left()
        left = 0.0 if left is None else left
        link.closing = True
        link.send({"t": "shutdown", "deadline": max(0.0, left - DRAIN_MARGIN)})
        # leave a hair of our own time to kill and reap before our supervisor gives up on us
        await asyncio.wait((exited,), timeout=max(0.0, left - 0.02))
        if not exited.done():
            self._kill(process, "drain_deadline")
            _log.warning("worker_killed", child=self.name, reason="drain deadline",
                         deadline_s=round(left, 3))
            await asyncio.wait((exited,), timeout=EOF_GRACE)

    def _kill(self, process: subprocess.Popen[bytes], kind: str) -> None:
        if process.poll() is None:
            process.kill()
            self.pool.counters.worker_kills_total.inc(*self.pool.labels(self), kind)

    def _forget(self, link: _Link) -> None:
        if self.link is link:
            self.link = None
        self.process = None
        if self.ready:
            self.set_ready(False)

    def fail(self, reason: str, kind: str) -> None:
        """Kill the current process with ``reason`` (reported as its crash)."""
        link = self.link
        if link is not None:
            link.fail(reason, kind)

    # ------------------------------------------------------------------ what the link reports

    def set_ready(self, ok: bool) -> None:
        """The worker's readiness (its own kernel's ``all_ready``)."""
        if ok == self.ready:
            return
        self.ready = ok
        self.pool.counters.worker_ready.set(*self.pool.labels(self), value=1.0 if ok else 0.0)
        self.pool.ready_changed()

    # ------------------------------------------------------------------ metrics

    async def scrape(self) -> str | None:
        """Fresh series from the worker, else its last ones (kept until a replacement answers).

        A dead worker's counters stay in the totals until its replacement's first scrape.
        """
        link = self.link
        labels = self.pool.labels(self)
        counters = self.pool.counters
        if link is not None and link.up and not link.failed.done():
            future = link.request({"t": "scrape", "id": self.pool.next_id()})
            await asyncio.wait((future,), timeout=SCRAPE_TIMEOUT)
            text = None
            if future.done() and not future.cancelled() and future.exception() is None:
                text = future.result().get("text")
            else:
                future.cancel()
            if isinstance(text, str) and text:
                self.metrics = text
                self.metrics_at = time.monotonic()
            else:
                counters.worker_scrape_timeouts_total.inc(*labels)
        if self.metrics_at is not None:
            counters.worker_metrics_age_seconds.set(
                *labels, value=round(time.monotonic() - self.metrics_at, 3))
        return self.metrics

    # ------------------------------------------------------------------ control

    async def control(self, action: str, child: str) -> dict[str, Any]:
        """Ask this worker to ``release``/``restart`` its own child ``child`` (a path in its
        tree); the answer as :data:`~ron_kernel._control.ForwardControl` describes it."""
        link = self.link
        if link is None or not link.up or link.failed.done() or link.closing:
            return {"outcome": "unavailable", "error": f"worker {self.name} is not up"}
        future = link.request({"t": "control", "id": self.pool.next_id(), "action": action,
                               "child": child})
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT):
                reply = await future
        except TimeoutError:
            return {"outcome": "unavailable",
                    "error": f"worker {self.name} did not answer within {CONTROL_TIMEOUT:g} s"}
        except EOFError:
            return {"outcome": "unavailable", "error": f"worker {self.name} went away"}
        outcome = reply.get("outcome")
        state, error, known = reply.get("state"), reply.get("error"), reply.get("known")
        return {
            "outcome": outcome if outcome in _CONTROL_OUTCOMES else "unavailable",
            "state": cap(printable(state), 40) if isinstance(state, str) else None,
            "error": cap(printable(error), 1500) if isinstance(error, str) else None,
            "known": [self.prefix + cap(printable(name), 200) for name in known[:200]
                      if isinstance(name, str)] if isinstance(known, list) else [],
        }

    # ------------------------------------------------------------------ introspection

    def status(self) -> dict[str, Any]:
        """One worker for ``/status``."""
        link = self.link
        process = self.process
        now = time.monotonic()
        return {
            "name": self.name,
            "pid": process.pid if process is not None else None,
            "state": ("down" if link is None else "stopping" if link.closing
                      else "up" if link.up else "starting"),
            "ready": self.ready,
            "starts": self._starts,
            "config_version": link.version if link is not None else None,
            "events_relayed": link.relayed if link is not None else 0,
            "events_lost": link.lost if link is not None else 0,
            "last_pong_age_s": (round(now - link.last_pong_wall, 3)
                                if link is not None and link.up else None),
            "last_exit": self.last_exit,
            "children": {name: {key: info.get(key) for key in ("state", "restarts",
                                                                 "last_reason")}
                         for name, info in self.children().items()},
        }

    def children(self) -> dict[str, Any]:
        """The worker's own supervisor snapshot, as of its last pong (``{}`` while down)."""
        link = self.link
        return dict(link.children) if link is not None else {}


class _Link(asyncio.Protocol):
    """The parent's end of one worker's channel: frames in, dispatched at once; frames out."""

    def __init__(self, slot: WorkerSlot, process: subprocess.Popen[bytes]) -> None:
        self.slot = slot
        self.pool = slot.pool
        self.process = process
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[tuple[str, str]] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.up = False
        self.closing = False
        self.version: int | None = None
        self.last_pong = 0.0  # loop time
        self.last_pong_wall = 0.0  # time.monotonic(), for /status
        self.relayed = 0
        self.lost = 0
        self.error: str | None = None  # the worker's own account of a failed start
        self.detail: str | None = None
        self.children: dict[str, Any] = {}
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._eof_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self.failed.done():
            return
        try:
            for message in self.decoder.feed(data):
                self._dispatch(message)
        except ProtocolError as exc:
            self.fail(cap(printable(f"protocol error: {exc}"), 300), "protocol")
        except Exception as exc:  # a well-formed frame with a wrong shape
            self.fail(cap(printable(f"protocol error: {type(exc).__name__}: {exc}"), 300),
                      "protocol")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(EOFError("the worker closed its channel"))
        self._waiting.clear()
        if not self.failed.done():
            loop = asyncio.get_running_loop()
            self._eof_timer = loop.call_later(EOF_GRACE, self.fail, "channel closed",
                                              "unreachable")

    # ------------------------------------------------------------------ sending

    def send(self, message: dict[str, Any]) -> None:
        """Queue one frame to the worker (dropped once the channel is closed)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(encode(message))
        if transport.get_write_buffer_size() > HIGH_WATER and not self.failed.done():
            self.fail("channel full: the worker does not read", "unreachable")

    def request(self, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send ``message`` (it has an ``id``); the future gets the reply with that id."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_exception(EOFError("the worker's channel is closed"))
            return future
        self._waiting[int(message["id"])] = future
        future.add_done_callback(lambda _: self._waiting.pop(int(message["id"]), None))
        self.send(message)
        return future

    def fail(self, reason: str, kind: str) -> None:
        """The worker must go: ``reason`` is its crash reason, ``kind`` the kill's label."""
        if not self.failed.done():
            self.failed.set_result((reason, kind))

    def close(self) -> None:
        """Close the channel (the process is the run's business)."""
        if self._eof_timer is not None:
            self._eof_timer.cancel()
        if not self.failed.done():
            self.failed.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ receiving

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise ProtocolError(f"unknown frame type {cap(printable(kind), 40)!r}")
        handler(self, message)

    def _on_events(self, message: dict[str, Any]) -> None:
        items = message["e"]
        if not isinstance(items, list):
            raise ProtocolError("'e' of an events frame is not a list")
        prefix = self.slot.prefix
        publish = self.pool.bus.publish
        for item in items:
            if not isinstance(item, list) or len(item) != 3 or not isinstance(item[1], str):
                raise ProtocolError("an event is not [kind, service, value]")
            kind, service, value = item
            if kind == "H" and isinstance(value, bool):
                publish(KernelEvent.Health(service=prefix + service, ok=value))
            elif kind == "C" and isinstance(value, str):
                publish(KernelEvent.ServiceCrashed(service=prefix + service, reason=value))
            else:
                raise ProtocolError(f"an event of kind {cap(printable(str(kind)), 20)!r}")
        self.relayed += len(items)
        self.pool.counters.worker_events_relayed_total.inc(*self.pool.labels(self.slot),
                                                           amount=len(items))
        self._lost(message.get("lost"))

    def _lost(self, total: Any) -> None:
        if not isinstance(total, int) or isinstance(total, bool) or total <= self.lost:
            return
        delta, self.lost = total - self.lost, total
        self.pool.counters.worker_events_lost_total.inc(*self.pool.labels(self.slot),
                                                        amount=delta)
        _log.warning("worker_events_lost", child=self.slot.name, lost=delta, total=total,
                     reason="the worker fell behind its own events or its channel was full")

    def _on_up(self, message: dict[str, Any]) -> None:
        version = message["version"]
        if not isinstance(version, int):
            raise ProtocolError("'version' of an up frame is not an int")
        self.up = True
        self.version = version
        self.last_pong = asyncio.get_running_loop().time()
        self.last_pong_wall = time.monotonic()
        _log.info("worker_up", child=self.slot.name, pid=self.process.pid,
                  config_version=version)
        self.slot.set_ready(message.get("ready") is True)
        if version != self.pool.config().version:
            self.pool.wake_rounds()  # a reload landed while it was starting

    def _on_pong(self, message: dict[str, Any]) -> None:
        self.last_pong = asyncio.get_running_loop().time()
        self.last_pong_wall = time.monotonic()
        children = message.get("children")
        if isinstance(children, dict) and all(isinstance(v, dict) for v in children.values()):
            self.children = children
        self._lost(message.get("lost"))
        self.slot.set_ready(message.get("ready") is True)

    def _on_ready(self, message: dict[str, Any]) -> None:
        self.slot.set_ready(message.get("ok") is True)

    def _on_reply(self, message: dict[str, Any]) -> None:
        rid = message["id"]
        if not isinstance(rid, int):
            raise ProtocolError("a reply's 'id' is not an int")
        future = self._waiting.pop(rid, None)
        if future is not None and not future.done():
            future.set_result(message)

    def _on_fatal(self, message: dict[str, Any]) -> None:
        reason = message.get("reason")
        detail = message.get("detail")
        if isinstance(reason, str):
            self.error = cap(printable(reason), 1500)
        if isinstance(detail, str):
            self.detail = detail

    def _on_stop(self, message: dict[str, Any]) -> None:
        reason = message.get("reason")
        text = reason if isinstance(reason, str) else ""
        self.pool.request_shutdown(f"{self.slot.name}: {cap(printable(text), 300)}")

    def _on_listen(self, message: dict[str, Any]) -> None:
        rid, name, addr = message["id"], message["name"], message["addr"]
        if not isinstance(rid, int) or not isinstance(name, str) or not isinstance(addr, str):
            raise ProtocolError("a listen frame needs id, name and addr")
        allow = message.get("allow_unspecified") is True
        try:
            sock = self.pool.listeners.bind(name, addr, allow_unspecified=allow)
        except (ValueError, OSError) as exc:
            self.send({"t": "listening", "id": rid, "ok": False,
                       "kind": "OSError" if isinstance(exc, OSError) else "ValueError",
                       "error": str(exc)})
            return
        _log.info("worker_listen", child=self.slot.name, name=name, addr=addr)
        self._send_fd({"t": "listening", "id": rid, "ok": True}, sock.fileno())

    def _send_fd(self, message: dict[str, Any], fd: int) -> None:
        """One frame with a file descriptor attached (``SCM_RIGHTS``), in stream order."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        frame = encode(message)
        if transport.get_write_buffer_size():
            self.send({**message, "ok": False, "kind": "OSError",
                       "error": "the channel is busy; cannot pass the socket now"})
            return
        raw = transport.get_extra_info("socket")
        channel = socket.socket(fileno=os.dup(raw.fileno()))
        try:
            sent = socket.send_fds(channel, [frame], [fd])
        except OSError as exc:
            self.fail(f"channel broken while passing a socket: {exc}", "unreachable")
            return
        finally:
            channel.close()
        if sent < len(frame):
            transport.write(frame[sent:])


_HANDLERS: dict[str, Callable[[_Link, dict[str, Any]], None]] = {
    "ev": _Link._on_events,
    "up": _Link._on_up,
    "pong": _Link._on_pong,
    "ready": _Link._on_ready,
    "metrics": _Link._on_reply,
    "prepared": _Link._on_reply,
    "controlled": _Link._on_reply,
    "fatal": _Link._on_fatal,
    "stop": _Link._on_stop,
    "listen": _Link._on_listen,
}


async def _wait_exit(process: subprocess.Popen[bytes]) -> int:
    """The process's return code once it has ended (reaped), without blocking the loop.

    A pidfd (Linux 5.3+) becomes readable when the process ends; elsewhere the status is
    polled every 5 ms.
    """
    loop = asyncio.get_running_loop()
    pidfd_open = getattr(os, "pidfd_open", None)
    fd: int | None = None
    if pidfd_open is not None:
        try:
            fd = pidfd_open(process.pid)
        except OSError:
            fd = None  # already gone (and maybe reaped), or no pidfd support
    if fd is not None:
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await ended
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    while True:
        code = process.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.005)
