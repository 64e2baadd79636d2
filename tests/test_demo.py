"""The `make run` demo: a slow receiver lags, the others get everything, nothing blocks."""

from __future__ import annotations

import pytest

from ron_kernel._demo import run_demo


async def test_demo_shows_lag_on_the_slow_receiver_only(capsys: pytest.CaptureFixture[str]) -> None:
    results = await run_demo(messages=600, capacity=64)
    assert results["batch"] == {"received": 600, "missed": 0}
    assert results["single"] == {"received": 600, "missed": 0}
    slow = results["slow"]
    assert slow["missed"] > 0
    assert slow["received"] + slow["missed"] == 600
    out = capsys.readouterr().out
    assert "slow   lagged: missed" in out
    assert "bus_lagged_total" in out


def test_bus_fanout_rig_quick_cases_deliver_everything(capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark's correctness side: every case delivers every message with zero lag."""
    from benchmarks import bus_fanout

    args = bus_fanout.parser().parse_args(
        ["--quick", "--loops", "asyncio", "--capacity", "256", "--burst", "128",
         "--rate", "20000", "--duration", "0.05", "--messages", "2000"])
    results = bus_fanout.run(args)
    assert {row["mode"] for row in results["throughput"]} == {"recv_many", "recv", "queue"}
    assert all(row["delivered_all"] for row in results["throughput"])
    assert all(row["lag"] == 0 and row["samples"] > 0 for row in results["latency"])
    assert [row["receivers"] for row in results["publish_cost"]] == [0, 1, 8, 16]
    assert "publish_8_idle_vs_1_ns" in results["targets"]
    table = bus_fanout.report(results)
    assert "recv_many" in table and "Targets" in table
