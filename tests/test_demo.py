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
