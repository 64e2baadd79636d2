"""Helpers shared by the fault-injection suite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)
