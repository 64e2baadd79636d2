"""Text the kernel shows to people: always encodable, never unbounded.

Crash reasons, tracebacks, paths and log values come from user code and the operating system:
a file name decoded with surrogate escapes cannot be encoded as UTF-8, and an exception message
can be megabytes long. Every observer (logs, events, ``/status``, the CLI) passes such text
through here. A leaf module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_REASON_CHARS", "cap", "printable", "printable_value", "show_path"]

MAX_REASON_CHARS = 2048
"""The longest crash reason kept (events, ``/status``, logs); the rest is cut from the middle."""


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (lone surrogates) escaped as ``\\udcff``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def cap(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, keeping its start and its end.

    The middle is replaced by ``" ... [N chars cut] ... "`` so a reader knows how much is gone;
    the result is never longer than ``limit``.
    """
    if len(text) <= limit:
        return text
    marker_room = 40
    keep = max(0, limit - marker_room)
    head, tail = keep - keep // 3, keep // 3
    cut = len(text) - head - tail
    out = f"{text[:head]} ... [{cut} chars cut] ... {text[len(text) - tail:] if tail else ''}"
    return out[:limit]


def show_path(path: str | os.PathLike[str] | bytes) -> str:
    """A path as text for people: undecodable bytes become U+FFFD, never an exception."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", "replace")


def printable_value(value: Any, _depth: int = 0) -> Any:
    """``value`` with every string in it (keys too, nested) made encodable by :func:`printable`.

    Other objects pass through; past 16 levels a value is replaced by its printable ``repr``.
    """
    if isinstance(value, str):
        return printable(value)
    if _depth > 16:
        return printable(repr(value))
    if isinstance(value, Mapping):
        return {printable(str(k)): printable_value(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_value(v, _depth + 1) for v in value]
    return value
