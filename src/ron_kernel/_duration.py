"""Durations as people write them in config: ``100ms``, ``1.5s``, ``1h30m``. A leaf module."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

MAX_DURATION = timedelta(hours=24)
"""The longest duration any setting accepts."""

_UNIT_US = {"h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000, "us": 1, "µs": 1}
_UNIT_ORDER = ("h", "m", "s", "ms", "us")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s|us|µs)")
_BARE_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_UNITS_HINT = "units: h, m, s, ms, us; e.g. '100ms', '1.5s', '1h30m'"


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``100ms``, ``1.5s``, ``30s``, ``5m``, ``1h``, ``1h30m``, ``250us``.

    Units are ``h``, ``m``, ``s``, ``ms`` and ``us`` (or ``µs``), each at most once, largest
    first. The result is rounded to the microsecond (``timedelta``'s resolution).

    Raises ``ValueError`` with a specific reason: a bare number (no unit; the message suggests
    one), a negative value, a value above 24h, or anything else that does not parse.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as '5s', got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise ValueError(f"empty duration ({_UNITS_HINT})")
    if len(s) > 64:
        raise ValueError("duration text is too long (more than 64 characters)")
    if _BARE_NUMBER.fullmatch(s):
        number = s.lstrip("+")
        if number.startswith("-"):
            raise ValueError(f"negative durations are not allowed ({_UNITS_HINT})")
        raise ValueError(
            f"a bare number has no unit; write '{number}s' or '{number}ms' ({_UNITS_HINT})")
    if s.startswith("-"):
        raise ValueError("negative durations are not allowed")
    total = Decimal(0)
    pos = 0
    last_rank = -1
    while pos < len(s):
        part = _PART.match(s, pos)
        if part is None:
            raise ValueError(f"cannot parse {s[pos:]!r} ({_UNITS_HINT})")
        unit = "us" if part.group(2) == "µs" else part.group(2)
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(f"units must appear once each, largest first ({_UNITS_HINT})")
        last_rank = rank
        total += Decimal(part.group(1)) * _UNIT_US[unit]
        pos = part.end()
    micros = int(total.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if micros > MAX_DURATION // timedelta(microseconds=1):
        raise ValueError(f"absurdly long: more than {format_duration(MAX_DURATION)}")
    return timedelta(microseconds=micros)


def format_duration(value: timedelta) -> str:
    """Format a ``timedelta`` in the syntax :func:`parse_duration` reads (``1h30m``, ``1s500ms``).

    ``parse_duration(format_duration(d)) == d`` for every non-negative ``d`` up to 24h.
    Raises ``ValueError`` for a negative duration.
    """
    micros = value // timedelta(microseconds=1)
    if micros < 0:
        raise ValueError("negative durations cannot be formatted")
    if micros == 0:
        return "0s"
    out = []
    for unit in _UNIT_ORDER:
        count, micros = divmod(micros, _UNIT_US[unit])
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
