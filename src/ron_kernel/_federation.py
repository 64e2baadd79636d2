"""Federation: this kernel's KernelEvents out to core NATS, the fleet's events in (extra ``nats``).

Composed by the kernel only when ``federation.nats_url`` is set; nats-py is imported when the
connection is first made, so a kernel without the extra never loads it.

Two tasks, neither of which can hold up the kernel bus (docs/FEDERATION.md):

* the **pump** is an ordinary receiver of the kernel bus. It numbers every event (``seq``, per
  node, from 1 in each process run) and appends it to a bounded buffer; a full buffer drops its
  oldest entry, and a ``Lagged`` on the receiver skips that many numbers. Both count in
  ``federation_dropped_total``, and both leave a gap in ``seq`` that the other kernels report
  as ``Lagged`` for this node. While NATS is away it only looks every :data:`SWEEP` seconds.
  While connected it also encodes the buffered events and hands them to nats-py.
* the **connection** task connects (nats-py's own reconnect is off: this task retries with
  jittered exponential backoff, so the first connection and every later one behave alike),
  subscribes to ``<prefix>.>`` for the fleet view, and waits for the connection to close.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import time
from typing import TYPE_CHECKING, Any

from ._bus import Bus, Receiver
from ._config import FederationConfig
from ._errors import Closed, Lagged
from ._events import KernelEvent
from ._fleet import TOPICS, Fleet, encode
from ._logging import get_logger
from ._redact import redact_text

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from ._counters import KernelCounters

__all__ = ["CONNECT_TIMEOUT", "FLUSH_GRACE", "REQUIRED_WAIT", "Federation", "backoff_delay"]

_log = get_logger("federation")

CONNECT_TIMEOUT = 2
"""Seconds one connection attempt may take (nats-py's ``connect_timeout``)."""
REQUIRED_WAIT = 5.0
"""With ``federation.required``: seconds the start waits for the first connection."""
FLUSH_GRACE = 2.0
"""Seconds the shutdown gives the last events (``Shutdown`` among them) to reach NATS."""
MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
PING_INTERVAL = 10
"""Seconds between client pings; two unanswered pings close a dead connection."""
PENDING_BYTES = 1 << 20
"""nats-py's own write buffer; past it a publish waits (the pump, never the bus)."""
FLUSH_TIMEOUT = 2.0
"""Seconds a publish may wait for nats-py's own buffer to drain before it gives up."""
SWEEP = 0.1
"""Seconds between two looks at the bus while NATS is away."""
SUB_PENDING_MSGS = 65_536
SUB_PENDING_BYTES = 64 << 20
_BATCH = 256
_SWEEP_BATCH = 4096


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before reconnect attempt ``attempt`` (1, 2, ...): "equal jitter" exponential.

    Half of ``min(MAX_BACKOFF, MIN_BACKOFF * 2**attempt)`` fixed, half random: never 0, so a
    fleet whose server restarts does not reconnect in lock-step.
    """
    ceiling: float = min(MAX_BACKOFF, MIN_BACKOFF * 2.0 ** min(attempt, 32))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


class Federation:
    """The NATS side of a kernel: publishes the kernel bus, feeds ``fleet`` with the others."""

    def __init__(self, config: FederationConfig, *, bus: Bus[KernelEvent], fleet: Fleet,
                 counters: KernelCounters) -> None:
        self._config = config
        self._servers = [part.strip() for part in config.nats_url.split(",")]
        self._shown_url = redact_text(config.nats_url)
        self._bus = bus
        self._fleet = fleet
        self._counters = counters
        self._subjects: dict[type, str] = {
            getattr(KernelEvent, name): f"{config.prefix}.{config.node}.{topic}"
            for name, topic in TOPICS.items()}
        self._capacity = config.buffer
        self._buffer: collections.deque[tuple[int, float, KernelEvent]] = collections.deque(
            maxlen=self._capacity)
        self._seq = 0
        self._published = 0
        self._dropped = 0
        self._connects = 0
        self._last_error: str | None = None
        self._attempt_error: BaseException | None = None
        self._nc: Client | None = None
        self._up = asyncio.Event()
        self._pump_wake = asyncio.Event()
        self._stopping = False
        self._rx: Receiver[KernelEvent] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Subscribe to the bus and start connecting (in the background).

        Returns at once, connected or not, unless ``federation.required``: then it waits up to
        :data:`REQUIRED_WAIT` seconds for the first connection and raises ``ConnectionError``
        (URL redacted) when there is none.
        """
        if self._tasks:
            return
        self._counters.federation_connected.set(value=0)
        self._rx = self._bus.subscribe()
        for name, coro in (("pump", self._pump()), ("connection", self._connection())):
            self._tasks[name] = asyncio.create_task(coro, name=f"ron-kernel federation {name}")
            self._counters.tasks_spawned_total.inc("federation")
        if self._config.required:
            try:
                await asyncio.wait_for(self._up.wait(), REQUIRED_WAIT)
            except TimeoutError:
                raise ConnectionError(
                    f"federation.required is true and NATS at {self._shown_url} could not be "
                    f"reached within {REQUIRED_WAIT:g}s ({self._last_error or 'no answer'})"
                ) from None

    async def stop(self, grace: float = FLUSH_GRACE) -> None:
        """Send what is buffered (``Shutdown`` included), flush, close; bounded by ``grace``.

        The kernel closes its bus first, so the pump drains every last event. What cannot be
        sent within ``grace`` is counted as dropped; with NATS away at that moment nothing is
        waited for. Idempotent.
        """
        if self._stopping or not self._tasks:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        pump, connection = self._tasks["pump"], self._tasks["connection"]
        if not self._bus.closed and self._rx is not None:
            self._rx.close()  # a stop without a closed bus (a failed start): stop reading now
        self._pump_wake.set()
        await asyncio.wait({pump}, timeout=max(0.0, deadline - loop.time()))
        nc = self._nc
        if nc is not None and nc.is_connected and pump.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.flush(), max(0.01, deadline - loop.time()))
        for task in (pump, connection):
            task.cancel()
        await asyncio.gather(pump, connection, return_exceptions=True)
        if self._buffer:
            self._drop(len(self._buffer))
            self._buffer.clear()
        if self._nc is not None:
            await _discard(self._nc)
            self._nc = None
        self._counters.federation_connected.set(value=0)
        _log.info("federation_stopped", url=self._shown_url, published=self._published,
                  dropped=self._dropped, last_seq=self._seq)

    # ------------------------------------------------------------------ reading

    @property
    def connected(self) -> bool:
        """Whether a NATS connection is up now."""
        return self._up.is_set()

    @property
    def published(self) -> int:
        """Events handed to NATS so far."""
        return self._published

    @property
    def dropped(self) -> int:
        """Events never handed to NATS so far."""
        return self._dropped

    def status(self) -> dict[str, Any]:
        """The ``federation`` section of ``/status`` (the URL's credentials redacted)."""
        return {
            "enabled": True,
            "connected": self.connected,
            "url": self._shown_url,
            "node": self._config.node,
            "prefix": self._config.prefix,
            "required": self._config.required,
            "published": self._published,
            "dropped": self._dropped,
            "buffered": len(self._buffer),
            "buffer": self._capacity,
            "seq": self._seq,
            "connects": self._connects,
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------------ outbound

    def _drop(self, n: int) -> None:
        self._dropped += n
        self._counters.federation_dropped_total.inc(amount=n)

    def _take(self, batch: list[Any]) -> None:
        """Number ``batch`` and keep it in the buffer; the oldest entries beyond are dropped.

        C-level work only (the kernel bus throughput must not notice federation): a filter,
        a zip into the bounded deque. Encoding waits until an event is really sent.
        """
        subjects = self._subjects
        events = [event for event in batch if type(event) in subjects]  # KernelEvents only
        n = len(events)
        if not n:
            return
        first = self._seq + 1
        self._seq += n
        buffer = self._buffer
        overflow = len(buffer) + n - self._capacity
        if overflow > 0:
            self._drop(overflow)
        buffer.extend(zip(range(first, first + n), itertools.repeat(time.time()), events,
                          strict=False))

    async def _pump(self) -> None:
        """Kernel bus -> numbered, bounded buffer -> NATS. Never holds up the bus.

        Connected, it reads every event as it comes and hands it over at once (latency). Not
        connected, it looks at the bus every :data:`SWEEP` seconds only: the bus ring holds the
        newest events meanwhile, what fell out of it arrives as one ``Lagged`` (numbers skipped,
        drops counted), and the local bus pays nothing per event for a federation that cannot
        send. If nats-py ever makes a publish wait (its own buffer full), the pump waits, its
        receiver lags, and what it misses is counted the same way.
        """
        rx = self._rx
        assert rx is not None
        try:
            while True:
                try:
                    nc = self._nc
                    if nc is not None and nc.is_connected:
                        if self._buffer:
                            await self._send(nc)  # the backlog of the time away
                        self._take(await rx.recv_many(_BATCH))
                        await self._send(nc)
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._pump_wake.wait(), SWEEP)
                    self._pump_wake.clear()
                    while True:  # everything there now, in ring-sized batches
                        batch = rx.try_recv_many(_SWEEP_BATCH)
                        if not batch:
                            break
                        self._take(batch)
                except Lagged as lag:
                    # events this receiver never saw: their numbers are skipped, so the other
                    # kernels see the gap and report it as Lagged for this node
                    self._seq += lag.missed
                    self._drop(lag.missed)
        except Closed:
            # the bus closed (shutdown) and everything was read: hand over the rest, Shutdown
            # included (stop() bounds how long this may take)
            nc = self._nc
            if nc is not None and nc.is_connected:
                await self._send(nc)
        finally:
            rx.close()

    async def _send(self, nc: Client) -> None:
        """Encode and publish the buffer, oldest first, while ``nc`` stays connected."""
        buffer = self._buffer
        subjects, node = self._subjects, self._config.node
        publish = nc.publish
        sent = 0
        try:
            while buffer:
                seq, ts, event = buffer.popleft()
                try:
                    await publish(subjects[type(event)], encode(event, node, seq, ts))
                except Exception as exc:  # closed under us, too large: at most once, counted
                    self._drop(1)
                    self._note_error(exc)
                    if not nc.is_connected:
                        return
                    continue
                sent += 1
                if sent % _BATCH == 0:
                    await asyncio.sleep(0)  # let the loop breathe during a long backlog
        finally:
            self._published += sent
            self._counters.federation_published_total.inc(amount=sent)

    # ------------------------------------------------------------------ connection

    def _note_error(self, exc: BaseException) -> None:
        text = str(exc) or type(exc).__name__
        self._last_error = redact_text(f"{type(exc).__name__}: {text}")[:300]

    async def _on_error(self, exc: Exception) -> None:
        self._attempt_error = exc
        self._note_error(exc)
        _log.debug("federation_client_error", error=self._last_error)

    async def _on_msg(self, msg: Msg) -> None:
        try:
            self._fleet.receive(msg.subject, msg.data)
        except Exception as exc:  # pragma: no cover - receive() never raises by contract
            self._counters.observer_errors_total.inc("federation")
            self._note_error(exc)

    async def _connection(self) -> None:
        """Connect, subscribe, wait for the close; again, with jittered backoff, until stopped."""
        from nats.aio.client import Client  # the nats extra: loaded only when federation is on

        attempt = 0
        while True:
            closed = asyncio.Event()

            async def on_closed(closed: asyncio.Event = closed) -> None:
                closed.set()

            nc = Client()
            self._attempt_error = None
            try:
                # nats-py retries inside connect() (max_reconnect_attempts per server, sleeping
                # reconnect_time_wait): one quick pass here, the backoff is ours, below
                await nc.connect(
                    self._servers, name=f"ron-kernel {self._config.node}",
                    allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0,
                    connect_timeout=CONNECT_TIMEOUT,
                    ping_interval=PING_INTERVAL, max_outstanding_pings=2,
                    pending_size=PENDING_BYTES, flush_timeout=FLUSH_TIMEOUT, no_echo=True,
                    error_cb=self._on_error, closed_cb=on_closed)
                await nc.subscribe(f"{self._config.prefix}.>", cb=self._on_msg,
                                   pending_msgs_limit=SUB_PENDING_MSGS,
                                   pending_bytes_limit=SUB_PENDING_BYTES)
            except asyncio.CancelledError:
                await _discard(nc)
                raise
            except Exception as exc:
                await _discard(nc)
                # "no servers available" says less than the socket error reported before it
                self._note_error(self._attempt_error or exc)
                attempt += 1
                self._counters.backoff_retries_total.inc("federation_connect")
                delay = backoff_delay(attempt)
                level = _log.warning if attempt == 1 or attempt % 20 == 0 else _log.debug
                level("federation_unreachable", url=self._shown_url, error=self._last_error,
                      attempt=attempt, retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._connects += 1
            self._nc = nc
            self._up.set()
            self._counters.federation_connected.set(value=1)
            self._pump_wake.set()
            _log.info("federation_connected", url=self._shown_url, node=self._config.node,
                      subjects=f"{self._config.prefix}.{self._config.node}.>",
                      fleet=f"{self._config.prefix}.>", connects=self._connects)
            try:
                await closed.wait()
            finally:
                if self._nc is nc:
                    self._nc = None
                self._up.clear()
                self._counters.federation_connected.set(value=0)
            _log.warning("federation_disconnected", url=self._shown_url,
                         error=self._last_error, buffered=len(self._buffer))


async def _discard(nc: Client) -> None:
    """Close a client, bounded: a server that stopped reading must not hold the caller."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 1.0)
    # nats-py cancels its reader, pinger and flusher without awaiting them: let them finish
    for _ in range(3):
        await asyncio.sleep(0)
