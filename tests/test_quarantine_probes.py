"""Quarantine that retries: a probe start after the cool-down, doubled when it fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ron_kernel import Config, Metrics
from ron_kernel.supervisor import ChildContext, Supervisor


async def _until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_a_failing_probe_doubles_the_cooldown_and_a_passing_one_leaves_quarantine():
    metrics = Metrics()
    healthy = {"now": False}
    runs = {"n": 0}

    async def flaky(ctx: ChildContext) -> None:
        runs["n"] += 1
        if not healthy["now"]:
            raise RuntimeError("still broken")
        ctx.ready()
        await ctx.shutdown.wait()

    sup = Supervisor(metrics=metrics, restart_cap=1, min_backoff=0, max_backoff=0.001,
                     quarantine_cooldown=0.05, reset_after=0.05)
    sup.add("flaky", flaky)
    probes = metrics.counters.supervisor_quarantine_probes_total
    async with sup:
        await _until(lambda: sup.snapshot()["flaky"]["state"] == "quarantined")
        info = sup.snapshot()["flaky"]
        assert info["next_probe_at"] is not None and info["quarantine_cooldown"] == 0.05
        await _until(lambda: probes.get("flaky", "failed") == 1)
        assert sup.snapshot()["flaky"]["quarantine_cooldown"] == 0.1  # doubled
        healthy["now"] = True
        await _until(lambda: probes.get("flaky", "passed") == 1)
        info = sup.snapshot()["flaky"]
        assert info["state"] == "running" and info["quarantine_cooldown"] is None
        assert metrics.counters.supervisor_quarantined.get("flaky") == 0.0
        assert "quarantined:flaky" not in metrics.health.missing()


async def test_release_works_at_any_time_and_cancels_the_probe():
    async def broken(ctx: ChildContext) -> None:
        raise RuntimeError("x")

    sup = Supervisor(restart_cap=1, min_backoff=0, max_backoff=0.001, quarantine_cooldown=60)
    sup.add("broken", broken)
    async with sup:
        await _until(lambda: sup.snapshot()["broken"]["state"] == "quarantined")
        assert sup.snapshot()["broken"]["next_probe_at"] is not None
        assert sup.release("broken")
        assert sup.snapshot()["broken"]["next_probe_at"] is None


def test_the_cooldown_is_a_config_key_with_env_and_flag():
    cfg = Config.load(env={"RONK_SUP_QUARANTINE_COOLDOWN": "30s"}, argv=[])
    assert cfg.supervisor.quarantine_cooldown.total_seconds() == 30
    cfg = Config.load(env={}, argv=["--sup-quarantine-cooldown", "2m"])
    assert Supervisor.from_config(cfg)._cooldown == 120
    assert Config().supervisor.quarantine_cooldown.total_seconds() == 0  # off by default
