"""A seeded, shuffling event loop: the asyncio analogue of loom.

``ShuffledLoop`` reorders the ready queue (callbacks that are runnable "at the same time") with a
seeded RNG before every iteration, so each seed is one legal interleaving of the same program.
Running a scenario under many seeds explores many schedules; a failing seed reproduces exactly
(``RONK_INTERLEAVE_SEED=<seed> pytest tests/test_interleavings.py``).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_SEEDS = int(os.environ.get("RONK_INTERLEAVE_SEEDS", "200"))


class ShuffledLoop(asyncio.SelectorEventLoop):
    """An event loop that runs ready callbacks in a seeded random order."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self._rng = random.Random(seed)
        self.shuffles = 0

    def _run_once(self) -> None:
        ready = self._ready  # type: ignore[attr-defined]
        if len(ready) > 1:
            items = list(ready)
            self._rng.shuffle(items)
            ready.clear()
            ready.extend(items)
            self.shuffles += 1
        super()._run_once()  # type: ignore[misc]


def seeds() -> list[int]:
    """The seeds to explore: one from ``RONK_INTERLEAVE_SEED``, else ``0..DEFAULT_SEEDS-1``."""
    one = os.environ.get("RONK_INTERLEAVE_SEED")
    if one is not None:
        return [int(one)]
    return list(range(DEFAULT_SEEDS))


def run_with_seed(seed: int, scenario: Callable[[random.Random], Awaitable[T]],
                  timeout: float = 10.0) -> T:
    """Run ``scenario(rng)`` on a ``ShuffledLoop(seed)``; a hang fails as a deadlock."""
    loop = ShuffledLoop(seed)
    rng = random.Random(seed ^ 0x5EED)

    async def guarded() -> Any:
        try:
            return await asyncio.wait_for(scenario(rng), timeout)
        except TimeoutError:
            raise AssertionError(
                f"deadlock or livelock under seed {seed}: scenario did not finish in {timeout}s "
                f"(reproduce: RONK_INTERLEAVE_SEED={seed})") from None

    try:
        return loop.run_until_complete(guarded())
    except AssertionError as exc:
        raise AssertionError(f"[seed {seed}; reproduce with RONK_INTERLEAVE_SEED={seed}] "
                             f"{exc}") from exc
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def jitter(rng: random.Random, max_yields: int = 3) -> None:
    """Yield to the loop a random number of times (randomised ``sleep(0)`` injection)."""
    for _ in range(rng.randrange(max_yields + 1)):
        await asyncio.sleep(0)
