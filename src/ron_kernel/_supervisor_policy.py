"""The restart policy as pure functions: durations, jittered backoff, the sliding restart window.

Nothing here touches the event loop, so the laws can be checked with synthetic timestamps
(``tests/test_supervisor_properties.py``).
"""

from __future__ import annotations

import math
import random
from collections import deque
from datetime import timedelta
from typing import Final, Literal

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
ChildState = Literal["waiting", "starting", "running", "backing_off", "quarantined", "probing",
                     "stopped"]

STRATEGIES: Final = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES: Final = ("permanent", "transient", "temporary")

DEFAULT_RESET_AFTER: Final = 30.0
"""Seconds of uptime after which a child's backoff attempt counter starts again (one default
for ``Supervisor(reset_after=...)`` and config ``supervisor.reset_after``)."""

MAX_QUARANTINE_COOLDOWN: Final = 3600.0
"""A failed probe doubles the quarantine cool-down up to this (1 h)."""

# An attempt number past this already saturates any sane cap (2**64 * 1 ns > 500 years), and
# keeps ``2**attempt`` from becoming a huge integer on a child that has crashed for weeks.
_MAX_DOUBLINGS: Final = 64


def to_seconds(value: timedelta | float, field: str, *, allow_inf: bool = False) -> float:
    """Return ``value`` (a ``timedelta`` or seconds) as float seconds, rejecting bad values.

    Raises ``TypeError`` for other types (``bool`` included) and ``ValueError`` for negative or
    NaN values, naming ``field``.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{field} must be a datetime.timedelta or seconds as a number, "
            f"got {type(value).__name__}")
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{field} must be >= 0, got {value!r}")
    if math.isinf(seconds) and not allow_inf:
        raise ValueError(f"{field} must be finite, got {value!r}")
    return seconds


def backoff_ceiling(attempt: int, min_backoff: float, max_backoff: float) -> float:
    """Upper bound of the delay before restart ``attempt`` (0-based).

    ``min(max_backoff, min_backoff * 2**attempt)``, never below ``min_backoff``: the envelope
    is non-decreasing in ``attempt``.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    doubled = min_backoff * float(2 ** min(attempt, _MAX_DOUBLINGS))
    return max(min_backoff, min(max_backoff, doubled))


def backoff_delay(attempt: int, min_backoff: float, max_backoff: float,
                  rng: random.Random | None = None) -> float:
    """The delay before restart ``attempt`` (0-based): exponential backoff with full jitter.

    Uniform in ``[min_backoff, min(max_backoff, min_backoff * 2**attempt)]``. ``rng`` is the
    random source (the module-level one when ``None``); pass a seeded ``random.Random`` for
    reproducible delays.
    """
    if min_backoff > max_backoff:
        raise ValueError(f"min_backoff ({min_backoff}) must be <= max_backoff ({max_backoff})")
    upper = backoff_ceiling(attempt, min_backoff, max_backoff)
    if upper <= min_backoff:
        return min_backoff
    draw = (rng or random).uniform(min_backoff, upper)
    # uniform() may round a hair past its bounds; the bounds are the contract.
    return min(upper, max(min_backoff, draw))


class RestartWindow:
    """The sliding-window restart limit of one child.

    :meth:`admit` is asked at each crash that needs a restart: it allows the restart (and
    records it) when fewer than ``cap`` restarts happened in the last ``window`` seconds,
    otherwise it refuses and the child is quarantined. With ``cap=3`` an always-crashing child
    therefore runs 4 times. A restart at time ``r`` counts at time ``t`` while ``t - r < window``.
    """

    __slots__ = ("_times", "cap", "window")

    def __init__(self, cap: int, window: float) -> None:
        self.cap = cap
        self.window = window
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        times, window = self._times, self.window
        # Same arithmetic as the documented law (``now - r < window`` counts), so floating point
        # cannot make the two disagree at the boundary.
        while times and now - times[0] >= window:
            times.popleft()

    def count(self, now: float) -> int:
        """Restarts recorded inside the window ending at ``now``."""
        self._expire(now)
        return len(self._times)

    def admit(self, now: float) -> bool:
        """Record a restart at ``now`` and return ``True``, or return ``False`` (quarantine)."""
        self._expire(now)
        if len(self._times) >= self.cap:
            return False
        self._times.append(now)
        return True

    def clear(self) -> None:
        """Forget every recorded restart (``Supervisor.release``)."""
        self._times.clear()


def dependency_cycle(depends_on: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle among the known names (``["a", "b", "a"]``), or ``None``. Unknown names are
    ignored here (they are reported separately, once every child had its chance to be added)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in depends_on.get(name, ()):
            if dep not in depends_on:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in depends_on:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def dependency_ranks(depends_on: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Each name's depth: 0 without dependencies, else 1 + the deepest dependency (acyclic)."""
    ranks: dict[str, int] = {}

    def rank(name: str) -> int:
        if name not in ranks:
            deps = [d for d in depends_on.get(name, ()) if d in depends_on]
            ranks[name] = 1 + max(map(rank, deps)) if deps else 0
        return ranks[name]

    for name in depends_on:
        rank(name)
    return ranks
