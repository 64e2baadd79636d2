"""The `make demo-bus` demo: a slow receiver lags, the others get everything, nothing blocks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# examples/ is not a package and not installed: load the demo from its file, as `make demo-bus`
# runs it.
_DEMO = Path(__file__).resolve().parent.parent / "examples" / "bus_demo.py"
_spec = importlib.util.spec_from_file_location("bus_demo", _DEMO)
assert _spec is not None and _spec.loader is not None
bus_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bus_demo)
run_demo = bus_demo.run_demo


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
