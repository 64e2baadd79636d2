"""Fault class: a series that exists only once its value first changes.

Tried: a worker pool whose workers never become ready. ``worker_ready{pool, worker}`` was
written only when a worker's readiness changed, and it starts as "not ready": a worker that
never got ready had no series at all, so ``worker_ready == 0`` (RonKernelWorkerNotReady) could
never fire and dashboards showed nothing instead of 0. Found by the real-Prometheus test of the
worker rules.

Rule: a gauge that an alert compares with a value has its series from the moment the thing it
describes exists, at its starting value: each worker's ``worker_ready`` is 0 from its slot's
creation (before its process even starts), 1 when ready.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ron_kernel import Config
from ron_kernel.kernel import Kernel
from workers_apps import Knobs


def _worker_ready(text: str) -> dict[str, float]:
    return {sample.labels["worker"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "worker_ready" and sample.labels.get("pool") == "w"}


async def test_a_worker_that_never_gets_ready_has_its_series_at_zero(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--sup-min-backoff", "20ms", "--sup-max-backoff", "50ms"]
    kernel = Kernel(Config.load(argv=argv, env={}, app=Knobs), app_config=Knobs, env={},
                    argv=argv, watch_config=False, handle_sighup=False)
    kernel.supervise_workers("w", app="workers_apps:never_ready", count=2)
    # before any process runs: the series are there, at 0
    assert _worker_ready((await kernel.metrics.scrape_text()).decode()) == {"0": 0.0, "1": 0.0}
    await kernel.start()
    try:
        async with asyncio.timeout(30):  # both workers up (running the app, still not ready)
            while not all(w["state"] == "up"  # noqa: ASYNC110 - polls the pool
                          for w in kernel.status()["workers"]["w"]["workers"].values()):
                await asyncio.sleep(0.02)
        text = (await kernel.metrics.scrape_text()).decode()
        assert _worker_ready(text) == {"0": 0.0, "1": 0.0}
        assert not kernel.health.all_ready()
    finally:
        await kernel.shutdown(5.0)
