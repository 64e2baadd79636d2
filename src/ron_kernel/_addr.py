"""The one address parser: ``host:port`` for config and ``Metrics.serve`` alike.

Two questions, two functions:

* :func:`parse_addr` — is it well formed? ``"host:port"``, ``"[v6]:port"`` or ``(host, port)``;
  the port is 1 to 5 ASCII digits, at most 65535.
* :func:`binds_every_interface` / :func:`resolves_to_every_interface` — would the OS bind every
  interface? Decided on the address the OS will actually bind, not on its spelling: ``0``,
  ``0x0``, ``0.0``, ``000.000.000.000`` are all ``0.0.0.0`` to ``inet_aton`` (which is what
  ``getaddrinfo`` and so ``bind`` use), ``::``, ``::0`` and ``::ffff:0.0.0.0`` are the IPv6
  forms, and a host name is resolved.

A leaf module: nothing here imports the rest of the package.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

__all__ = ["binds_every_interface", "parse_addr", "resolves_to_every_interface"]

_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_PORT = re.compile(r"[0-9]{1,5}")
# Spellings that mean "every interface" without being an address at all.
_ANY = ("", "*")


def parse_addr(addr: str | tuple[str, int]) -> tuple[str, int]:
    """Split ``addr`` into ``(host, port)``, or raise ``ValueError`` saying what is wrong.

    Accepts ``"host:port"``, ``"[ipv6]:port"`` and ``(host, port)``. The host is an IP
    address, a host name, or empty (every interface, as the OS reads it). The message does not
    repeat ``addr``: callers add which setting it came from.
    """
    if isinstance(addr, tuple):
        if len(addr) != 2 or not isinstance(addr[0], str):
            raise ValueError("expected (host: str, port: int)")
        host, port_value = addr
        if isinstance(port_value, bool) or not isinstance(port_value, int):
            raise ValueError("the port must be an int")
        if not 0 <= port_value <= 65535:
            raise ValueError(f"port {port_value} is outside 0..65535")
        _check_host(host)
        return host, port_value
    if not isinstance(addr, str):
        raise ValueError("expected 'host:port' or (host, port)")
    text = addr.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("an IPv6 address needs the form [addr]:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("no port (expected host:port)")
        if ":" in host:
            raise ValueError("an IPv6 address must be bracketed, as [::1]:9909")
        _check_host(host)
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is above 65535")
    return host, port


def _check_host(host: str) -> None:
    if host in _ANY or _literal(host) is not None or _HOSTNAME.fullmatch(host):
        return
    raise ValueError(f"{host!r} is not an IP address or host name")


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a numeric host means to the OS, or ``None`` for a name."""
    try:
        return ipaddress.IPv6Address(host)
    except ValueError:
        pass
    try:
        # inet_aton reads every legacy IPv4 spelling (0, 0x0, 0.0, 010.0.0.1, ...) the way
        # getaddrinfo and bind do, which ipaddress.IPv4Address deliberately does not.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _every(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.is_unspecified:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped is not None and mapped.is_unspecified


def binds_every_interface(host: str) -> bool:
    """True when binding ``host`` (as written: no name lookup) would bind every interface."""
    if host in _ANY:
        return True
    literal = _literal(host)
    return literal is not None and _every(literal)


async def resolves_to_every_interface(host: str) -> bool:
    """Like :func:`binds_every_interface`, and a host name is resolved (off the loop) first.

    A name that does not resolve is not "every interface": binding it fails on its own.
    """
    if binds_every_interface(host):
        return True
    if _literal(host) is not None:
        return False
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return False
    for _family, _type, _proto, _name, sockaddr in infos:
        literal = _literal(str(sockaddr[0]).split("%", 1)[0])
        if literal is not None and _every(literal):
            return True
    return False
