"""The worker channel's framing: length-prefixed orjson objects over a stream socket.

One frame is a 4-byte big-endian length, then that many bytes of one JSON object carrying its
kind in ``"t"`` (``{"t": "ping", "n": 3}``). Frames are bounded (:data:`MAX_FRAME`); the
decoder refuses anything else -- an oversized length, bytes that are not JSON, JSON that is not
an object, an object without a string ``"t"`` -- with :class:`ProtocolError`, before a single
byte past the bad frame is looked at. The parent treats that as a worker gone wrong (it is
killed and reported), never as its own failure.

A leaf module (orjson only): the parent (``_workers``) and the worker process
(``_worker_main``) both frame through here.
"""

from __future__ import annotations

import socket
from typing import Any, Final

import orjson

__all__ = ["HEADER", "MAX_FRAME", "FrameDecoder", "ProtocolError", "SyncChannel", "encode"]

HEADER: Final = 4
"""Bytes of the length prefix."""

MAX_FRAME: Final = 16 << 20
"""The largest payload either side accepts (16 MiB: a metrics scrape of ~100k series)."""


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol (the text says what)."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame: the length prefix and the JSON of ``message``.

    Raises :class:`ProtocolError` when the encoded object is larger than :data:`MAX_FRAME`
    (the sender must split or drop it) and ``TypeError`` when it holds what JSON cannot carry.
    """
    try:
        payload = orjson.dumps(message)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"a channel message must be plain JSON data: {exc}") from None
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(payload)} bytes is over the {MAX_FRAME} limit")
    return len(payload).to_bytes(HEADER, "big") + payload


class FrameDecoder:
    """Turns a byte stream into messages; bytes may arrive split anywhere.

    ``feed(data)`` returns every message completed by ``data`` (possibly none). After a
    :class:`ProtocolError` the decoder is poisoned: every later ``feed`` raises again (the
    stream cannot be re-synchronised, the peer must go).
    """

    __slots__ = ("_buffer", "_failed", "_limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._failed: str | None = None

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def take_pending(self) -> bytes:
        """Remove and return the bytes of the incomplete frame (to feed another decoder)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def feed(self, data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Add ``data``; return the messages it completes, in order."""
        if self._failed is not None:
            raise ProtocolError(self._failed)
        buffer = self._buffer
        buffer += data
        out: list[dict[str, Any]] = []
        pos = 0
        end = len(buffer)
        try:
            while end - pos >= HEADER:
                size = int.from_bytes(buffer[pos:pos + HEADER], "big")
                if size > self._limit:
                    raise ProtocolError(
                        f"a frame announces {size} bytes, over the {self._limit} limit")
                if end - pos - HEADER < size:
                    break
                start = pos + HEADER
                out.append(_decode(memoryview(buffer)[start:start + size]))
                pos = start + size
        except ProtocolError as exc:
            self._failed = str(exc)
            buffer.clear()
            raise
        del buffer[:pos]
        return out


def _decode(payload: memoryview) -> dict[str, Any]:
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"a frame is not JSON ({exc})") from None
    finally:
        payload.release()
    if not isinstance(message, dict):
        raise ProtocolError(f"a frame holds {type(message).__name__}, not an object")
    kind = message.get("t")
    if not isinstance(kind, str):
        raise ProtocolError("a frame has no string field 't'")
    return message


class SyncChannel:
    """Blocking use of a channel socket, before an event loop owns it (the worker's start).

    Receives with ``recvmsg`` so file descriptors passed along (``SCM_RIGHTS``) are collected
    in arrival order (:meth:`take_fd`). :meth:`detach` hands the unread bytes over to whatever
    reads the socket next.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = FrameDecoder()
        self._ready: list[dict[str, Any]] = []
        self._fds: list[int] = []

    def send(self, message: dict[str, Any]) -> None:
        """Send one frame (blocking)."""
        self.sock.sendall(encode(message))

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; ``TimeoutError`` after ``timeout`` seconds, ``EOFError`` at EOF."""
        self.sock.settimeout(timeout)
        try:
            while not self._ready:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, 8)
                self._fds.extend(fds)
                if not data:
                    raise EOFError("the channel was closed")
                self._ready.extend(self._decoder.feed(data))
        finally:
            self.sock.settimeout(None)
        return self._ready.pop(0)

    def take_fd(self) -> int | None:
        """The oldest file descriptor received and not yet taken (``None`` if none)."""
        return self._fds.pop(0) if self._fds else None

    def detach(self) -> tuple[list[dict[str, Any]], bytes]:
        """Messages decoded but not read, and the bytes of an incomplete frame."""
        ready, self._ready = self._ready, []
        leftover = self._decoder.take_pending()
        for fd in self._fds:  # descriptors nobody asked for: do not leak them
            _close_fd(fd)
        self._fds.clear()
        return ready, leftover


def _close_fd(fd: int) -> None:
    try:
        socket.close(fd)
    except OSError:
        pass
