"""Named listening sockets: bound once by the kernel, shared with its children and workers.

``kernel.listen("web", "127.0.0.1:8080")`` binds through the one address parser
(:func:`~ron_kernel._addr.parse_addr`) with the observability rule: an address that binds
every interface (``0.0.0.0``, ``::``, a name resolving to one) is refused unless
``allow_unspecified=True``. The socket stays with the kernel; a child asks for it by name
(``ctx.listen_socket("web")``) and gets a duplicate it owns and may close (aiohttp's
``SockSite`` closes it at cleanup), so a restarted child gets a fresh one. Worker processes
inherit the kernel's sockets: every worker accepts on the same port.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Final

from ._addr import binds_every_interface, parse_addr

__all__ = ["BACKLOG", "ListenSockets", "bind_socket", "check_name", "describe"]

BACKLOG: Final = 1024
"""``listen()`` backlog of every socket bound here."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

Binder = Callable[[str, str, bool], socket.socket]
"""Who binds when this process may not (a worker asks its parent): ``(name, addr, allow)``."""


def check_name(name: object) -> str:
    """``name`` if it is a valid socket name, else ``ValueError`` saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"a listening socket name must be 1 to 64 letters, digits, '_', '.' "
                         f"or '-' (starting with a letter or digit), got {name!r}")
    return name


def describe(sock: socket.socket) -> str:
    """``host:port`` (``[v6]:port``) a socket is bound to, or ``"?"`` once it is closed."""
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class ListenSockets:
    """The listening sockets of one kernel, by name.

    :meth:`bind` binds (or, in a worker process, asks the parent through ``binder``);
    :meth:`adopt` takes an inherited one; :meth:`dup` is what children get. Not thread-safe:
    used from the kernel's loop and its start-up code.
    """

    def __init__(self, *, binder: Binder | None = None) -> None:
        self._sockets: dict[str, socket.socket] = {}
        self._asked: dict[str, str] = {}  # name -> the address it was bound for
        self._binder = binder

    def bind(self, name: str, addr: str, *, allow_unspecified: bool = False) -> socket.socket:
        """Bind ``name`` to ``addr`` once and return the socket; again: the same socket.

        Raises ``ValueError`` for a bad name or address, an address that binds every interface
        without ``allow_unspecified``, or a name already bound to another address; ``OSError``
        (with the name and address) when the OS refuses the bind.
        """
        check_name(name)
        if not isinstance(addr, str):
            raise ValueError(f"listen {name!r}: the address must be a 'host:port' string, "
                             f"got {addr!r}")
        found = self._sockets.get(name)
        if found is not None:
            asked = self._asked.get(name)
            if asked is not None and asked != addr.strip():
                raise ValueError(f"listen {name!r}: already bound to {asked!r} "
                                 f"({describe(found)}), not {addr!r}")
            return found
        if self._binder is not None:
            sock = self._binder(name, addr, allow_unspecified)
        else:
            sock = bind_socket(name, addr, allow_unspecified=allow_unspecified)
        self._sockets[name] = sock
        self._asked[name] = addr.strip()
        return sock

    def set_binder(self, binder: Binder | None) -> None:
        """Who binds new names from now on (``None``: this process, with :func:`bind_socket`)."""
        self._binder = binder

    def adopt(self, name: str, sock: socket.socket) -> None:
        """Register an already-bound socket (inherited from the parent) under ``name``."""
        check_name(name)
        old = self._sockets.get(name)
        if old is not None and old is not sock:
            old.close()
        self._sockets[name] = sock

    def get(self, name: str) -> socket.socket:
        """The kernel's own socket ``name`` (do not close it); ``KeyError`` naming the known."""
        sock = self._sockets.get(name)
        if sock is None:
            known = ", ".join(repr(n) for n in self._sockets) or "none"
            raise KeyError(f"no listening socket named {name!r} (known: {known}); bind it with "
                           f"kernel.listen({name!r}, 'host:port') before the children start")
        return sock

    def dup(self, name: str) -> socket.socket:
        """A duplicate of socket ``name`` that the caller owns (and closes when done)."""
        return self.get(name).dup()

    def names(self) -> list[str]:
        """The names bound so far, in order."""
        return list(self._sockets)

    def items(self) -> list[tuple[str, socket.socket]]:
        """``(name, socket)`` pairs, in order (the sockets stay owned here)."""
        return list(self._sockets.items())

    def status(self) -> dict[str, str]:
        """``{name: "host:port"}`` actually bound (for ``/status``)."""
        return {name: describe(sock) for name, sock in self._sockets.items()}

    def close(self) -> None:
        """Close every socket (duplicates handed out stay open until their owners close them)."""
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._asked.clear()


def bind_socket(name: str, addr: str, *, allow_unspecified: bool = False) -> socket.socket:
    """Bind and listen on ``addr`` (TCP); see :meth:`ListenSockets.bind` for the errors."""
    try:
        host, port = parse_addr(addr)
    except ValueError as exc:
        raise ValueError(f"listen {name!r} addr {addr!r}: {exc}") from None
    if not allow_unspecified and binds_every_interface(host):
        raise ValueError(_every_interface(name, addr))
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise OSError(getattr(exc, "errno", None),
                      f"listen {name!r} addr {addr!r}: cannot resolve {host!r}: {exc}") from exc
    if not allow_unspecified and any(
            binds_every_interface(str(info[4][0]).split("%", 1)[0]) for info in infos):
        raise ValueError(_every_interface(name, addr))
    family, kind, proto, _canon, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"listen {name!r} addr {addr!r}: cannot bind: "
                                 f"{exc.strerror or exc}") from exc
    return sock


def _every_interface(name: str, addr: str) -> str:
    return (f"listen {name!r} addr {addr!r} binds every interface; pass "
            "allow_unspecified=True if you mean it (the default is a specific address such "
            "as '127.0.0.1:8080')")
