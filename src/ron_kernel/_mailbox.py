"""The implementation behind :mod:`ron_kernel.mailbox` (the public facade documents it)."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._errors import Busy, Closed, Empty, Timeout

if TYPE_CHECKING:
    from ._metrics import Metrics

__all__ = ["DEFAULT_CAPACITY", "Mailbox", "Request"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CAPACITY = 128


class Request(Generic[T, R]):
    """A message expecting an answer: read :attr:`message`, then :meth:`reply` or :meth:`fail`."""

    __slots__ = ("_future", "_mailbox", "message")

    def __init__(self, message: T, future: asyncio.Future[R], mailbox: Mailbox[Any]) -> None:
        self.message = message
        self._future = future
        self._mailbox = mailbox

    def reply(self, value: R) -> bool:
        """Answer the request; False when the caller already gave up (counted as dropped)."""
        if self._future.done():
            self._mailbox._dropped()
            return False
        self._future.set_result(value)
        return True

    def fail(self, exc: BaseException) -> bool:
        """Answer the request with an error raised in the caller."""
        if self._future.done():
            self._mailbox._dropped()
            return False
        self._future.set_exception(exc)
        return True

    @property
    def answered(self) -> bool:
        """Whether the request was answered, failed or abandoned by its caller."""
        return self._future.done()


class Mailbox(Generic[T]):
    """A bounded FIFO queue for one service (default capacity 128).

    ``try_send`` never waits (``Busy`` when full); ``send`` waits for room up to ``timeout``
    (``Timeout``); ``recv`` waits for a message. After :meth:`close`, sends raise ``Closed``
    and the reader drains what is left, then gets ``Closed``.
    """

    name: str
    """The mailbox's name (the ``queue`` label of its metrics)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, name: str,
                 metrics: Metrics | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"Mailbox capacity must be an int > 0, got {capacity!r}")
        if not isinstance(name, str) or not name:
            raise ValueError("Mailbox name must be a non-empty string (it labels its metrics)")
        self.name = name
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._closed = False
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._counters = metrics.counters if metrics is not None else None
        if self._counters is not None:
            self._counters.attach_mailbox(self)

    @property
    def capacity(self) -> int:
        """The most messages the mailbox holds."""
        return self._capacity

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        """Messages waiting to be received (never more than the capacity)."""
        return len(self._items)

    def try_send(self, msg: T) -> None:
        """Enqueue ``msg`` now, or raise ``Busy`` at once when full (``Closed`` when closed)."""
        if self._closed:
            self._dropped()
            raise Closed(f"mailbox {self.name!r} is closed")
        if len(self._items) >= self._capacity:
            if self._counters is not None:
                self._counters.busy_rejections_total.inc(self.name)
            raise Busy(f"mailbox {self.name!r} is full ({self._capacity} messages)")
        self._items.append(msg)
        _wake_one(self._getters)

    async def send(self, msg: T, timeout: float | None = None) -> None:  # noqa: ASYNC109 (API.md)
        """Enqueue ``msg``, waiting for room up to ``timeout`` seconds (``None``: no limit).

        Raises ``Timeout`` when no room appeared in time (counted in ``io_timeouts_total``),
        ``Closed`` when the mailbox is closed. Cancel-safe: a cancelled send enqueues nothing.
        """
        _check_timeout(timeout, "send timeout", allow_zero=True)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closed:
                self._dropped()
                raise Closed(f"mailbox {self.name!r} is closed")
            if len(self._items) < self._capacity:
                self._items.append(msg)
                _wake_one(self._getters)
                return
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                self._timed_out("mailbox_send")
                raise Timeout(f"mailbox {self.name!r} stayed full for {timeout}s")
            fut = loop.create_future()
            self._putters.append(fut)
            try:
                async with asyncio.timeout(remaining):
                    await fut
            except TimeoutError:
                self._timed_out("mailbox_send")
                raise Timeout(f"mailbox {self.name!r} stayed full for {timeout}s") from None
            finally:
                if not fut.done():
                    fut.cancel()
                # a wake-up we did not use goes to the next sender
                elif len(self._items) < self._capacity:
                    _wake_one(self._putters)

    def try_recv(self) -> T:
        """Return the oldest message now.

        Raises ``Empty`` when there is none, ``Closed`` when closed and drained.
        """
        if self._items:
            item = self._items.popleft()
            _wake_one(self._putters)
            return item
        if self._closed:
            raise Closed(f"mailbox {self.name!r} is closed and drained")
        raise Empty(f"mailbox {self.name!r} is empty")

    async def recv(self) -> T:
        """Wait for and return the oldest message; ``Closed`` once closed and drained."""
        loop = asyncio.get_running_loop()
        while True:
            if self._items:
                item = self._items.popleft()
                _wake_one(self._putters)
                return item
            if self._closed:
                raise Closed(f"mailbox {self.name!r} is closed and drained")
            fut = loop.create_future()
            self._getters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()

    async def request(self, msg: Any, timeout: float | None) -> Any:  # noqa: ASYNC109 (API.md)
        """Send ``msg`` wrapped in a :class:`Request` and wait for its reply within ``timeout``.

        ``timeout`` is seconds (> 0, finite) or ``None`` for no limit. The send itself is
        ``try_send`` (a full mailbox raises ``Busy`` at once). Raises ``Timeout`` when no reply
        came in time (a late reply is then counted as dropped); ``ValueError`` for a timeout
        that is zero, negative, NaN or infinite.
        """
        _check_timeout(timeout, "request timeout", allow_zero=False)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.try_send(Request(msg, fut, self))  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            self._timed_out("mailbox_request")
            raise Timeout(f"no reply from mailbox {self.name!r} within {timeout}s") from None

    def close(self, *, discard: bool = False) -> None:
        """Close the mailbox. Waiting senders get ``Closed``; the reader drains what is left.

        With ``discard=True`` the waiting messages are thrown away (and counted in
        ``queue_dropped_total``) instead of being drained.
        """
        self._closed = True
        if discard and self._items:
            self._dropped(len(self._items))
            self._items.clear()
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)

    def __repr__(self) -> str:
        return (f"Mailbox(name={self.name!r}, depth={len(self._items)}, "
                f"capacity={self._capacity}, closed={self._closed})")

    def _dropped(self, n: int = 1) -> None:
        if self._counters is not None:
            self._counters.queue_dropped_total.inc(self.name, amount=n)

    def _timed_out(self, op: str) -> None:
        if self._counters is not None:
            self._counters.io_timeouts_total.inc(op)


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
            return


def _check_timeout(timeout: float | None, what: str, *, allow_zero: bool) -> None:
    """Seconds as a finite number (``>= 0`` or ``> 0``), or ``None``; else ``ValueError``."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"{what} must be seconds as a number or None, got {timeout!r}")
    if math.isnan(timeout) or math.isinf(timeout) or timeout < 0 or (timeout == 0
                                                                    and not allow_zero):
        low = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be finite and {low} (or None), got {timeout!r}")
