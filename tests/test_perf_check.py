"""The perf regression gate's comparison logic, on synthetic ratios (no rig runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import check
from benchmarks._common import add_ratio
from benchmarks._report import Panel, save_plot


def _measured(values: dict[str, list[float]], classes: dict[str, str]) -> check.Measured:
    return check.Measured(values, classes)


def test_latency_ratio_fails_when_it_rises_beyond_its_allowance() -> None:
    # latency_p95 allows +10 %: 1.0 -> 1.09 passes, 1.11 fails
    assert check.within("latency_p95", 1.09, 1.0)
    assert not check.within("latency_p95", 1.11, 1.0)
    # p99 allows +15 %, restart/reload p95 +20 %
    assert check.within("latency_p99", 1.14, 1.0)
    assert not check.within("latency_p99", 1.16, 1.0)
    assert check.within("restart_reload_p95", 1.19, 1.0)
    assert not check.within("restart_reload_p95", 1.21, 1.0)


def test_throughput_ratio_fails_when_it_drops_more_than_ten_percent() -> None:
    assert check.within("throughput", 21.7, 24.0)   # -9.6 %
    assert not check.within("throughput", 21.5, 24.0)  # -10.4 %


def test_direction_matters_an_improvement_always_passes() -> None:
    # a latency ratio that halves and a throughput ratio that doubles are improvements
    assert check.within("latency_p95", 0.5, 1.0)
    assert check.within("throughput", 48.0, 24.0)
    # the same moves in the other direction are regressions
    assert not check.within("latency_p95", 2.0, 1.0)
    assert not check.within("throughput", 12.0, 24.0)


def test_nan_is_a_regression_not_a_pass() -> None:
    assert not check.within("throughput", float("nan"), 1.0)
    assert not check.within("latency_p95", float("nan"), 1.0)


def test_limits_and_allowed_text() -> None:
    assert check.limit_of("latency_p95", 2.0) == pytest.approx(2.2)
    assert check.limit_of("throughput", 20.0) == pytest.approx(18.0)
    assert check.limit_of("latency_p95", 2.0, override=0.5) == pytest.approx(3.0)
    v = check.Verdict("r", "x", "throughput", 19.0, 20.0, 18.0, True, "ok")
    assert v.allowed == ">= 18"
    v = check.Verdict("r", "x", "latency_p99", 1.0, 1.0, 1.15, True, "ok")
    assert v.allowed == "<= 1.15"


def test_unknown_class_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown ratio class 'latency_p50'"):
        check.limit_of("latency_p50", 1.0)
    with pytest.raises(ValueError, match="'x:p50'"):
        add_ratio({}, "x:p50", 1.0, 1.0, klass="latency_p50", unit="ms")


def test_round_trip_synthetic_regression_fails_and_improvement_passes(tmp_path: Path) -> None:
    classes = {"synthetic:throughput": "throughput",
               "synthetic:latency_p95": "latency_p95"}
    stored = _measured({"synthetic:throughput": [23.0, 24.0, 25.0],
                        "synthetic:latency_p95": [0.9, 1.0, 1.3]}, classes)
    [path] = check.write_baselines({"bus_fanout": stored}, tmp_path)
    doc = json.loads(path.read_text())
    # the median is stored, with the runs and their spread, never an absolute time
    entry = doc["ratios"]["synthetic:throughput"]
    assert entry["value"] == 24.0 and entry["class"] == "throughput"
    assert entry["runs"] == [23.0, 24.0, 25.0] and entry["spread"] == pytest.approx(2 / 24, 1e-3)
    assert doc["ratios"]["synthetic:latency_p95"]["value"] == 1.0
    assert "python" in doc["machine"]

    improved = _measured({"synthetic:throughput": [30.0, 31.0, 29.0],
                          "synthetic:latency_p95": [0.7, 0.8, 0.75]}, classes)
    verdicts = check.check({"bus_fanout": improved}, tmp_path)
    assert all(v.ok for v in verdicts)
    assert all("improved" in v.note for v in verdicts)

    # one bad run out of three does not fail the gate (the median counts) ...
    noisy = _measured({"synthetic:throughput": [24.0, 10.0, 24.5],
                       "synthetic:latency_p95": [1.0, 3.0, 1.02]}, classes)
    assert all(v.ok for v in check.check({"bus_fanout": noisy}, tmp_path))

    # ... but a real regression (the median moved) does, and says which ratio
    slower = _measured({"synthetic:throughput": [20.0, 21.0, 20.5],
                        "synthetic:latency_p95": [1.0, 1.05, 1.02]}, classes)
    verdicts = {v.name: v for v in check.check({"bus_fanout": slower}, tmp_path)}
    assert not verdicts["synthetic:throughput"].ok
    assert verdicts["synthetic:throughput"].note == "REGRESSED"
    assert verdicts["synthetic:latency_p95"].ok


def test_a_ratio_that_disappears_fails(tmp_path: Path) -> None:
    classes = {"a": "throughput", "b": "latency_p99"}
    check.write_baselines({"rig": _measured({"a": [2.0], "b": [1.0]}, classes)}, tmp_path)
    verdicts = check.check({"rig": _measured({"a": [2.0]}, {"a": "throughput"})}, tmp_path)
    missing = [v for v in verdicts if v.name == "b"]
    assert missing and not missing[0].ok and missing[0].note.startswith("MISSING")


def test_widened_tolerance_is_stored_and_honoured(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(check.WIDENED, "noisy", 0.5)
    monkeypatch.setitem(check.DROPPED, "useless", "spread 120 % between runs")
    m = _measured({"noisy": [1.0], "useless": [3.0]}, {"noisy": "latency_p95",
                                                      "useless": "latency_p95"})
    [path] = check.write_baselines({"rig": m}, tmp_path)
    doc = json.loads(path.read_text())
    assert "useless" not in doc["ratios"]
    assert doc["ratios"]["noisy"]["tolerance"] == 0.5
    verdicts = check.check({"rig": _measured({"noisy": [1.4]}, {"noisy": "latency_p95"})},
                           tmp_path)
    assert [v.ok for v in verdicts] == [True]


def test_bad_baseline_files_name_the_file_and_entry(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="make perf-baseline"):
        check.load_baseline(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        check.load_baseline(bad)
    bad.write_text(json.dumps({"ratios": {"x": {"value": 1.0, "class": "fast"}}}))
    with pytest.raises(ValueError, match=r"ratios\.x\.class: 'fast'"):
        check.load_baseline(bad)
    bad.write_text(json.dumps({"ratios": {"x": {"value": "1", "class": "throughput"}}}))
    with pytest.raises(ValueError, match=r"ratios\.x: expected"):
        check.load_baseline(bad)
    bad.write_text(json.dumps({"ratios": {"x": {"value": 1, "class": "throughput",
                                                "tolerance": 5}}}))
    with pytest.raises(ValueError, match=r"ratios\.x\.tolerance"):
        check.load_baseline(bad)


def test_check_without_baselines_exits_2_before_measuring(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main(["--baselines", str(tmp_path), "--rigs", "http"]) == 2
    assert "make perf-baseline" in capsys.readouterr().err


def test_add_ratio_keeps_a_flat_dict_of_floats() -> None:
    results: dict[str, object] = {}
    add_ratio(results, "asyncio:readyz_p95", 0.05, 0.04, klass="latency_p95", unit="ms")
    add_ratio(results, "publish_rate", 10.0, 0.0, klass="throughput", unit="1/s")
    ratios = results["ratios"]
    assert isinstance(ratios, dict)
    assert ratios["asyncio:readyz_p95"] == pytest.approx(1.25)
    assert ratios["publish_rate"] != ratios["publish_rate"]  # NaN, never a ZeroDivisionError
    assert results["ratio_classes"] == {"asyncio:readyz_p95": "latency_p95",
                                        "publish_rate": "throughput"}


def test_save_plot_writes_a_png(tmp_path: Path) -> None:
    path = save_plot(tmp_path / "p.png", "t", [
        Panel("lines", "receivers", "msg/s", lines={"a": ([1, 2, 4], [3.0, 2.0, 1.0])},
              logx=True, logy=True),
        Panel("boxes", "kind", "µs", distributions={"x": [1.0, 2.0, 3.0], "y": [0.05, 0.06]},
              logy=True)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dropped_ratio_is_not_judged_even_if_its_baseline_remains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classes = {"a": "throughput", "b": "latency_p95"}
    check.write_baselines({"rig": _measured({"a": [2.0], "b": [1.0]}, classes)}, tmp_path)
    monkeypatch.setitem(check.DROPPED, "b", "too noisy")
    verdicts = check.check({"rig": _measured({"a": [2.0], "b": [9.0]}, classes)}, tmp_path)
    assert [(v.name, v.ok) for v in verdicts] == [("a", True)]
