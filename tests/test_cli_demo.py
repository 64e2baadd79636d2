"""The demo services of ``ron-kernel run``, in process: they wait with ctx.sleep, so they stop
at once at shutdown (nothing cancelled or abandoned), crash as designed, and the demo operator
releases the quarantined worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from ron_kernel import Config
from ron_kernel.cli import demo
from ron_kernel.kernel import Kernel


def _kernel(**supervisor: str | int) -> Kernel:
    config = Config.from_mapping({"supervisor": {"min_backoff": "1ms", "max_backoff": "5ms",
                                                 **supervisor}})
    return Kernel(config, env={}, watch_config=False, handle_sighup=False)


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _aborted(kernel: Kernel) -> float:
    text = kernel.metrics.render().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tasks_aborted_total{"))


async def test_every_demo_child_returns_at_shutdown_without_being_cancelled() -> None:
    kernel = _kernel()
    demo.install_demo(kernel)
    async with kernel:
        await _until(lambda: all(kernel.health.snapshot()["services"].get(name) is True
                                 for name in ("heartbeat", "bus-consumer", "demo-operator")))
        started = time.perf_counter()
        await kernel.shutdown()
        elapsed = time.perf_counter() - started
    assert _aborted(kernel) == 0  # each returned by itself: ctx.sleep ended at shutdown
    assert elapsed < 4.0, elapsed  # far below the 5 s drain deadline even on a loaded machine


async def test_the_flaky_worker_crashes_after_its_lifetime(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(demo.random, "uniform", lambda low, high: 0.02)
    kernel = _kernel(restart_cap=1000)
    kernel.supervise("flaky-worker", demo.flaky_worker)
    async with kernel:
        await _until(lambda: kernel.supervisor.snapshot()["flaky-worker"]["restarts"] >= 2)
        reason = kernel.supervisor.snapshot()["flaky-worker"]["last_reason"] or ""
    assert "demo crash after 0.0s of work" in reason


async def test_the_demo_operator_releases_the_quarantined_worker(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(demo.random, "uniform", lambda low, high: 0.01)
    monkeypatch.setattr(demo, "RELEASE_AFTER", 0.05)
    kernel = _kernel(restart_cap=1)
    released: list[str] = []
    real_release = kernel.supervisor.release

    def spy(name: str) -> None:
        released.append(name)
        real_release(name)

    monkeypatch.setattr(kernel.supervisor, "release", spy)
    kernel.supervise("flaky-worker", demo.flaky_worker)
    kernel.supervise("demo-operator", demo.demo_operator(kernel))
    async with kernel:
        await _until(lambda: bool(released))
    assert released[0] == "flaky-worker"
