"""The bounded broadcast bus: one shared ring, a cursor per receiver (tokio broadcast semantics).

Hot path notes (measured by ``python -m benchmarks.bus_fanout`` from the repository root):

* ``publish`` is O(1) whatever the number of receivers: it writes one ring slot, bumps the tail
  and, only when some receiver is parked waiting, resolves one shared wake-up future.
* Counters are plain ints on the bus; :class:`~ron_kernel.Metrics` reads them at scrape time
  through a custom collector, so no Prometheus call happens per message.
* Receivers read by index into the shared ring; ``recv_many`` copies a slice in C.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._errors import Closed, Empty, Lagged

if TYPE_CHECKING:
    from types import TracebackType

    from ._counters import KernelCounters
    from ._metrics import Metrics

T = TypeVar("T")

DEFAULT_CAPACITY = 4096
MAX_CAPACITY = 1 << 20
"""The largest ring a bus may have (config `bus.capacity` is held to the same limit)."""


class BusStats:
    """A point-in-time summary of a bus (see :meth:`Bus.stats`)."""

    __slots__ = ("capacity", "closed", "dropped", "lagged", "no_receivers", "published",
                 "receivers", "retained")

    def __init__(self, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self, key, value)

    capacity: int
    """The ring size."""
    receivers: int
    """Receivers alive now."""
    published: int
    """Every ``publish`` call, including those with no receivers (``bus_published_total``)."""
    no_receivers: int
    """Publishes that found no receiver (``bus_no_receivers_total``)."""
    dropped: int
    """Publishes after ``close()`` (``bus_dropped_total``)."""
    lagged: int
    """Messages receivers missed because they fell behind (``bus_lagged_total``)."""
    retained: int
    """Messages currently held in the ring."""
    closed: bool
    """Whether ``close()`` was called."""

    def as_dict(self) -> dict[str, Any]:
        """Return the statistics as a plain dict (for JSON)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"BusStats({inner})"


class Bus(Generic[T]):
    """A bounded, in-process broadcast bus with tokio ``broadcast`` semantics.

    Every message published is seen by every receiver subscribed at that moment, in publish
    order. The bus keeps the last ``capacity`` messages in one ring shared by all receivers;
    ``publish`` never blocks and never awaits. A receiver that falls more than ``capacity``
    messages behind gets :class:`~ron_kernel.errors.Lagged` (with exactly how many it missed)
    once, then continues from the oldest message still retained.

    All receivers get the **same object**: treat messages as read-only (frozen dataclasses,
    tuples, bytes, :class:`~ron_kernel.KernelEvent`).

    >>> bus: Bus[str] = Bus(capacity=8)
    >>> rx = bus.subscribe()
    >>> bus.publish("hello")
    1
    >>> rx.try_recv()
    'hello'

    Give each task its own receiver (``bus.subscribe()`` or ``rx.resubscribe()``).
    """

    __slots__ = ("__weakref__", "_capacity", "_closed", "_counters", "_dropped", "_lagged",
                 "_loop", "_no_receivers", "_published", "_receivers", "_ring", "_tail",
                 "_waiter", "_waiter_thread")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, metrics: Metrics | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise ValueError(f"Bus capacity must be an int > 0, got {capacity!r}")
        if capacity <= 0:
            raise ValueError(f"Bus capacity must be > 0 (a bus is always bounded), got {capacity}")
        if capacity > MAX_CAPACITY:
            raise ValueError(f"Bus capacity must be <= {MAX_CAPACITY}, got {capacity}")
        self._capacity = capacity
        self._ring: list[Any] = [None] * capacity
        self._tail = 0  # total messages written into the ring; next write goes to tail % cap
        self._receivers = 0
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._waiter_thread = 0  # the loop thread of the parked receivers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._published = 0
        self._no_receivers = 0
        self._dropped = 0
        self._lagged = 0
        self._counters: KernelCounters | None = None
        if metrics is not None:
            self._counters = metrics.counters
            self._counters.attach_bus(self)

    # ---------------------------------------------------------------- publish side

    def publish(self, msg: T) -> int:
        """Send ``msg`` to every current receiver; return how many there were.

        Never blocks, never awaits, O(1) however many receivers exist. With no receivers it
        returns 0, counts the publish and keeps nothing. After :meth:`close` it returns 0 and
        counts ``bus_dropped_total``.

        Call it from the event loop's thread. From any other thread use
        :meth:`publish_threadsafe`; a ``publish`` from another thread that finds receivers
        parked is detected, still wakes them (through the loop) and warns once.
        """
        self._published += 1
        if self._closed:
            self._dropped += 1
            return 0
        receivers = self._receivers
        if not receivers:
            self._no_receivers += 1
            return 0
        tail = self._tail
        self._ring[tail % self._capacity] = msg
        self._tail = tail + 1
        # _wake(), inlined: this is the per-message path and a method call costs ~10 % here.
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if threading.get_ident() != self._waiter_thread:
                _wrong_thread(waiter)
            elif not waiter.done():
                waiter.set_result(None)
        return receivers

    def publish_threadsafe(self, msg: T) -> None:
        """Publish ``msg`` from any thread: it is published in the loop's thread, soon.

        The bus learns its loop when a receiver is made or waits inside a running loop; before
        that (no receiver anywhere), this raises ``RuntimeError``. From the loop's own thread it
        is :meth:`publish`.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("publish_threadsafe: no receiver has subscribed inside an event "
                               "loop yet, so the bus does not know which loop to publish in")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.publish(msg)
        else:
            loop.call_soon_threadsafe(self.publish, msg)

    def subscribe(self) -> Receiver[T]:
        """Return a new receiver that sees every message published from now on."""
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
        return Receiver(self, self._tail)

    def close(self) -> None:
        """Close the bus: receivers drain what is left, then get ``Closed``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake()

    @property
    def capacity(self) -> int:
        """How many messages the ring retains."""
        return self._capacity

    @property
    def receiver_count(self) -> int:
        """How many receivers are alive (not closed, not garbage-collected)."""
        return self._receivers

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def stats(self) -> BusStats:
        """Return a small snapshot of the bus: capacity, receivers and its counters."""
        return BusStats(
            capacity=self._capacity,
            receivers=self._receivers,
            published=self._published,
            no_receivers=self._no_receivers,
            dropped=self._dropped,
            lagged=self._lagged,
            retained=min(self._tail, self._capacity),
            closed=self._closed,
        )

    @staticmethod
    def handle_recv(outcome: T | Lagged | Closed, metrics: Metrics | None) -> T | None:
        """Turn a receive outcome into a message or ``None`` (spec parity with the Rust kernel).

        A message passes through. A :class:`Lagged` outcome adds its ``missed`` count to
        ``bus_receiver_lag_total`` and returns ``None``; a :class:`Closed` outcome returns
        ``None``::

            try:
                outcome = await rx.recv()
            except (Lagged, Closed) as exc:
                outcome = exc
            msg = Bus.handle_recv(outcome, metrics)
        """
        if isinstance(outcome, Lagged):
            if metrics is not None:
                metrics.counters.bus_receiver_lag_total.inc(amount=outcome.missed)
            return None
        if isinstance(outcome, Closed):
            return None
        return outcome

    def __repr__(self) -> str:
        return (f"Bus(capacity={self._capacity}, receivers={self._receivers}, "
                f"published={self._published}, closed={self._closed})")

    # ---------------------------------------------------------------- internals

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if threading.get_ident() != self._waiter_thread:
                _wrong_thread(waiter)
            elif not waiter.done():
                waiter.set_result(None)

    def _wait_future(self) -> asyncio.Future[None]:
        waiter = self._waiter
        if waiter is None or waiter.done():
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            self._waiter_thread = threading.get_ident()
            self._loop = loop
        return waiter


class Receiver(Generic[T]):
    """One reader of a :class:`Bus`: a cursor into the shared ring.

    Not safe to share between tasks; give each task its own (``bus.subscribe()`` or
    :meth:`resubscribe`). Use it as a context manager or call :meth:`close` when done;
    a garbage-collected receiver also stops counting.
    """

    __slots__ = ("__weakref__", "_bus", "_cap", "_closed", "_next", "_ring")

    def __init__(self, bus: Bus[T], start: int) -> None:
        self._bus = bus
        # the ring list and its size never change: read them from here, one lookup less
        self._ring = bus._ring
        self._cap = bus._capacity
        self._next = start
        self._closed = False
        bus._receivers += 1

    # -------------------------------------------------------------- non-waiting reads

    def try_recv(self) -> T:
        """Return the next message without waiting.

        Raises :class:`Lagged` once when the receiver fell behind (and moves it to the oldest
        retained message), :class:`Empty` when nothing is there yet, and :class:`Closed` after
        the bus or this receiver was closed and everything was read.
        """
        bus = self._bus
        nxt = self._next
        tail = bus._tail
        if nxt < tail and not self._closed:
            cap = self._cap
            if tail - nxt > cap:
                self._lag(tail - cap - nxt)
            self._next = nxt + 1
            return self._ring[nxt % cap]  # type: ignore[no-any-return]
        if bus._closed or self._closed:
            raise Closed("the bus is closed and this receiver has read everything")
        raise Empty("no message available yet")

    def try_recv_many(self, limit: int | None = None) -> list[T]:
        """Return every message available now (at most ``limit``), ``[]`` when there is none.

        Raises :class:`Lagged` first when the receiver fell behind, and :class:`Closed` after
        close once everything was read; ``ValueError`` for a ``limit`` that is not an int > 0.
        """
        if limit is not None:
            _check_limit(limit)
        bus = self._bus
        nxt = self._next
        tail = bus._tail
        if nxt < tail and not self._closed:
            return self._take(nxt, tail, limit)
        if bus._closed or self._closed:
            raise Closed("the bus is closed and this receiver has read everything")
        return []

    # -------------------------------------------------------------- waiting reads

    async def recv(self) -> T:
        """Wait for and return the next message.

        Raises :class:`Lagged` once when the receiver fell behind, then continues from the oldest
        retained message; raises :class:`Closed` after close once everything was read.
        Cancel-safe: a cancelled ``recv`` consumes nothing.
        """
        # Fast path first, inline: a receiver keeping up finds its message without waiting, and
        # per-message readers pay for this coroutine on every message.
        nxt = self._next
        bus = self._bus
        tail = bus._tail
        if nxt < tail and not self._closed:
            cap = self._cap
            if tail - nxt <= cap:
                self._next = nxt + 1
                return self._ring[nxt % cap]  # type: ignore[no-any-return]
            self._lag(tail - cap - nxt)
        while True:
            if bus._closed or self._closed:
                raise Closed("the bus is closed and this receiver has read everything")
            await _park(bus)
            nxt = self._next
            tail = bus._tail
            if nxt < tail and not self._closed:
                cap = self._cap
                if tail - nxt > cap:
                    self._lag(tail - cap - nxt)
                self._next = nxt + 1
                return self._ring[nxt % cap]  # type: ignore[no-any-return]

    async def recv_many(self, limit: int | None = None) -> list[T]:
        """Wait until at least one message is available, then return all of them (up to ``limit``).

        The batch fast path: one wake-up and one slice copy for many messages. Raises
        :class:`Lagged` first when the receiver fell behind; :class:`Closed` after close once
        everything was read. ``ValueError`` for a ``limit`` that is not an int > 0.
        """
        if limit is not None:
            _check_limit(limit)
        bus = self._bus
        while True:
            nxt = self._next
            tail = bus._tail
            if nxt < tail and not self._closed:
                return self._take(nxt, tail, limit)
            if bus._closed or self._closed:
                raise Closed("the bus is closed and this receiver has read everything")
            await _park(bus)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        """Yield messages until Closed; lag is skipped and counted in ``bus_receiver_lag_total``."""
        counters = self._bus._counters
        while True:
            try:
                msg = await self.recv()
            except Lagged as lag:
                if counters is not None:
                    counters.bus_receiver_lag_total.inc(amount=lag.missed)
                continue
            except Closed:
                return
            yield msg

    # -------------------------------------------------------------- lifecycle

    def resubscribe(self) -> Receiver[T]:
        """Return a new receiver on the same bus, starting at the current tail."""
        return self._bus.subscribe()

    def close(self) -> None:
        """Stop receiving: the receiver no longer counts and further reads raise ``Closed``."""
        if not self._closed:
            self._closed = True
            bus = self._bus
            bus._receivers -= 1
            # A task parked in this receiver's recv must see Closed now, not at the next publish;
            # the other parked receivers just re-check and park again.
            bus._wake()

    @property
    def closed(self) -> bool:
        """Whether this receiver was closed."""
        return self._closed

    def __len__(self) -> int:
        """Messages published since this receiver's cursor that it has not read yet.

        Like tokio's ``Receiver::len``: it may exceed what is retained when the receiver lagged.
        """
        if self._closed:
            return 0
        return self._bus._tail - self._next

    def __enter__(self) -> Receiver[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten receiver must not keep counting as a live subscriber.
        try:
            if not self._closed:
                self._closed = True
                self._bus._receivers -= 1
        except AttributeError:  # pragma: no cover - partially constructed
            pass

    def __repr__(self) -> str:
        return f"Receiver(unread={len(self)}, closed={self._closed})"

    # -------------------------------------------------------------- internals

    def _lag(self, missed: int) -> None:
        bus = self._bus
        bus._lagged += missed
        self._next = bus._tail - bus._capacity
        raise Lagged(missed)

    def _take(self, nxt: int, tail: int, limit: int | None) -> list[T]:
        cap = self._cap
        if tail - nxt > cap:
            self._lag(tail - cap - nxt)
        if limit is not None and tail - nxt > limit:
            tail = nxt + limit
        self._next = tail
        ring = self._ring
        start = nxt % cap
        end = start + (tail - nxt)
        if end <= cap:
            return ring[start:end]
        return ring[start:] + ring[: end - cap]


def _check_limit(limit: object) -> None:
    # before the cursor moves: a float (or bool) limit would corrupt it
    if type(limit) is not int or limit <= 0:
        raise ValueError(f"limit must be an int > 0 or None, got {limit!r}")


_warned_wrong_thread = False


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wrong_thread(waiter: asyncio.Future[None]) -> None:
    """A publish from a thread that is not the parked receivers' loop: wake them through it."""
    global _warned_wrong_thread
    try:
        waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        return
    if not _warned_wrong_thread:
        _warned_wrong_thread = True
        warnings.warn("Bus.publish called from a thread that is not the event loop's; use "
                      "bus.publish_threadsafe(msg) from other threads", RuntimeWarning,
                      stacklevel=3)


async def _park(bus: Bus[Any]) -> None:
    """Wait for the next publish or close on ``bus``.

    All parked receivers share one future, so ``publish`` wakes them with a single
    ``set_result``. When one waiting task is cancelled, asyncio cancels that shared future too;
    the other waiters see a ``CancelledError`` that is not theirs and simply re-check. Whether it
    is ours is decided by our task's ``cancelling()`` count going up while we waited, so a task
    that once swallowed a cancellation (count stuck above 0) is not fooled either.
    """
    waiter = bus._wait_future()
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        await waiter
    except asyncio.CancelledError:
        if task is None or task.cancelling() > before:
            raise
        # Someone else's cancellation resolved our shared future: re-check the ring.
