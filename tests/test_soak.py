"""The soak machinery, run for a few seconds with fast cadences: report shape and metric patterns.

RSS and FD thresholds are not asserted on the live run (far too short to mean anything); the
verdict logic is checked on synthetic samples instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import soak
from benchmarks.soak import PATTERNS, SoakOptions, evaluate, run_soak

# RSS and FD tolerances so wide that they cannot decide a 4 s run (4 s says nothing about
# leaks): the verdict then depends only on the metric patterns and the errors, which the fast
# cadences determine, so it must be PASS.
FAST = SoakOptions(
    duration=4.0, interval=0.2, crash_periods=(0.05, 0.1), crashers_per_period=1,
    flaky_period=0.03, flaky_cap=2, release_every=0.4, reload_hz=20.0, invalid_every=3,
    publish_batch=300, publish_every=0.02, stall_for=0.2, metrics_every=0.1, readyz_every=0.02,
    rss_tolerance_pct=1e9, fd_tolerance=1_000_000,
)


async def test_soak_runs_every_load_and_sees_every_metric_pattern() -> None:
    report = await run_soak(FAST)

    assert report["rig"] == "soak"
    assert report["error_count"] == 0, report["errors"]
    assert set(report["checks"]) == {"rss_growth", "fds_flat", "patterns", "no_errors"}
    for key in ("start_bytes", "end_bytes", "max_bytes", "baseline_after_warmup_bytes",
                "growth_pct", "tolerance_pct"):
        assert key in report["rss"]
    assert report["rss"]["max_bytes"] >= report["rss"]["start_bytes"] > 0
    assert report["fds"]["max"] >= report["fds"]["start"] > 0
    assert report["warmup_s"] == 2.0  # max(10 %, 30 s) capped at half of a 4 s run
    samples = report["samples"]
    assert len(samples) >= 8  # 4 s at 0.2 s: 20 on a quiet machine; the check needs quarters
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)

    # Every pattern rose, in every quarter of the run.
    for key in PATTERNS:
        pattern = report["patterns"][key]
        assert pattern["ok"], (key, pattern)
        assert pattern["end"] > pattern["start"]
    activity = report["activity"]
    assert activity["invalid_config_writes"] >= 1
    assert activity["releases"] >= 2
    assert activity["slow_lagged"] >= 1 and activity["stalled_lagged"] >= 1
    assert set(activity["readyz_status_counts"]) == {"200", "503"}
    assert report["checks"] == dict.fromkeys(report["checks"], True)
    assert report["verdict"] == "PASS"
    json.dumps(report)  # the report is JSON-serialisable as written by --json


def _samples(rss: list[int], fds: list[int], stall: str | None = None) -> list[dict[str, Any]]:
    out = []
    for i, (r, f) in enumerate(zip(rss, fds, strict=True)):
        row: dict[str, Any] = {"t": float(i), "rss_bytes": r, "fds": f}
        for key in PATTERNS:
            row[key] = float(i if key != stall else min(i, 2))
        out.append(row)
    return out


def test_verdict_passes_a_flat_run_and_fails_growth_leaks_and_stalls() -> None:
    opts = SoakOptions(duration=10.0, interval=1.0, warmup=2.0)
    flat = evaluate(opts, _samples([100] * 2 + [200] * 9, [10] * 11))
    assert flat["verdict"] == "PASS", flat["checks"]
    assert flat["rss"]["growth_pct"] == 0.0

    growing = evaluate(opts, _samples([200] * 8 + [211] * 3, [10] * 11))
    assert not growing["checks"]["rss_growth"] and growing["verdict"] == "FAIL"
    assert growing["rss"]["growth_pct"] == 5.5

    leaking = evaluate(opts, _samples([200] * 11, [10] * 5 + [30] * 6))
    assert not leaking["checks"]["fds_flat"] and leaking["verdict"] == "FAIL"

    stalled = evaluate(opts, _samples([200] * 11, [10] * 11, stall="bus_lagged_total"))
    assert not stalled["patterns"]["bus_lagged_total"]["ok"]
    assert stalled["patterns"]["bus_lagged_total"]["quarters_rising"] == 1
    assert stalled["checks"]["patterns"] is False and stalled["verdict"] == "FAIL"


def test_parse_counters_sums_label_sets() -> None:
    text = "\n".join([
        "# HELP service_restarts_total Restarts.",
        'service_restarts_total{service="a"} 3.0',
        'service_restarts_total{service="b"} 4.0',
        "bus_lagged_total 17.0",
        'config_reloads_total{outcome="applied"} 5.0',
        'config_reloads_total{outcome="rejected"} 2.0',
        'config_reloads_total{outcome="unchanged"} 9.0',
    ])
    assert soak.parse_counters(text) == {
        "service_restarts_total": 7.0, "bus_lagged_total": 17.0,
        "config_reloads_applied": 5.0, "config_reloads_rejected": 2.0}


def test_main_fails_a_run_too_short_for_a_release_and_exits_1(tmp_path: Path) -> None:
    # Default cadences: the quarantined worker is released every 4 s, so a 1.5 s run cannot see
    # /readyz recover; that pattern fails, and so does the verdict, whatever RSS does.
    out = tmp_path / "soak.json"
    rc = soak.main(["--duration", "1.5", "--interval", "0.5", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["patterns"]["readyz_recoveries"]["ok"] is False
    assert report["checks"]["patterns"] is False
    assert report["verdict"] == "FAIL" and rc == 1
    assert report["options"]["duration"] == 1.5 and len(report["samples"]) >= 3


def test_main_exits_0_on_a_passing_report_and_writes_it(tmp_path: Path, monkeypatch) -> None:
    opts = SoakOptions(duration=10.0, interval=1.0, warmup=2.0)
    passing = evaluate(opts, _samples([100] * 2 + [200] * 9, [10] * 11))
    assert passing["verdict"] == "PASS"

    async def fake_run(options: SoakOptions) -> dict[str, Any]:
        assert (options.duration, options.rss_tolerance_pct) == (10.0, 3.0)
        return passing

    monkeypatch.setattr(soak, "run_soak", fake_run)
    out = tmp_path / "nested" / "soak.json"
    rc = soak.main(["--duration", "10", "--rss-tolerance", "3", "--json", str(out)])
    assert rc == 0
    assert json.loads(out.read_text())["verdict"] == "PASS"
