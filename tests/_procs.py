"""Helpers for tests that start real processes."""

from __future__ import annotations


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (reads ``/proc``, Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
