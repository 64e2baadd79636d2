"""The perf regression gate's comparison logic, on synthetic ratios (no rig runs here)."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import pytest

from benchmarks import check
from benchmarks._common import add_ratio, base_parser, loops_of
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


# ----------------------------------------------------------------------------- the re-measure
#
# The whole gate (check.main: first round, re-measure, verdicts, exit status) on fake rigs. A
# fake rig "runs" its kernel path and its baseline path on a fake clock that advances only when
# told, so every ratio is exact and nothing here is timed. `extra_sleep` is the injected
# regression: a deliberate sleep in the kernel path, as a fraction of its normal cost.


class _FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _FakeRig:
    """A module-like rig: ``parser()`` and ``run(args)`` as check.run_quick expects."""

    def __init__(self, load: list[float] | None = None, extra_sleep: float = 0.0) -> None:
        self.load = load or []  # per run: background load on the kernel path (1.0 = none)
        self.extra_sleep = extra_sleep
        self.calls = 0

    def parser(self) -> argparse.ArgumentParser:
        return base_parser("fake rig")

    def run(self, args: argparse.Namespace) -> dict[str, object]:
        load = self.load[self.calls] if self.calls < len(self.load) else 1.0
        self.calls += 1
        results: dict[str, object] = {}
        for i, flavor in enumerate(loops_of(args)):
            clock = _FakeClock()
            cost = 1e-3 * (1 + i / 10)
            t0 = clock.now
            clock.sleep(cost * load)                    # the kernel path ...
            clock.sleep(cost * self.extra_sleep)        # ... with the injected regression
            kernel = clock.now - t0
            t0 = clock.now
            clock.sleep(1.25e-3)                        # the same-run baseline idiom
            baseline = clock.now - t0
            add_ratio(results, f"{flavor}:latency_p95", kernel, baseline,
                      klass="latency_p95", unit="s")
            add_ratio(results, f"{flavor}:throughput", 1 / kernel, 1 / baseline,
                      klass="throughput", unit="1/s")
        return results


def _install(monkeypatch: pytest.MonkeyPatch, **rigs: _FakeRig) -> None:
    table = {}
    for name, rig in rigs.items():
        module = types.ModuleType(f"fake_rig_{name}")
        module.parser = rig.parser  # type: ignore[attr-defined]
        module.run = rig.run  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
        table[name] = (module.__name__, ("--quick",))
    monkeypatch.setattr(check, "RIGS", table)


def _baselines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> list[str]:
    _install(monkeypatch, a=_FakeRig(), b=_FakeRig())
    assert check.main(["--update", "--baselines", str(tmp_path), "--rigs", "a,b",
                       "--no-progress"]) == 0
    capsys.readouterr()
    return ["--baselines", str(tmp_path), "--rigs", "a,b", "--no-progress"]


def _rows(out: str) -> dict[str, str]:
    """Table rows of the gate's output by ratio (``"a asyncio:throughput"``)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1][:2] in ("a ", "b "):
            rows[cells[1]] = line
    return rows


def test_an_injected_1_5x_regression_is_re_measured_and_still_regressed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = _baselines(tmp_path, monkeypatch, capsys)
    # a deliberate sleep of half the kernel path's cost: 1.5x worse in every run, with a little
    # run-to-run noise so the runs differ
    slow = _FakeRig(load=[1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97], extra_sleep=0.5)
    steady = _FakeRig()
    _install(monkeypatch, a=slow, b=steady)

    assert check.main(argv) == 1

    out = capsys.readouterr().out
    assert "re-measuring a with 5 more interleaved runs" in out
    assert slow.calls == 3 + 5 and steady.calls == 3  # only the rig with failing ratios re-runs
    rows = _rows(out)
    for flavor in ("asyncio", "uvloop"):
        for ratio in ("latency_p95", "throughput"):
            row = rows[f"a {flavor}:{ratio}"]
            assert "REGRESSED after re-measure (median of all 8 runs)" in row
            assert row.count("|") == 1  # the runs column: first round | re-measure
        assert "REGRESSED" not in rows[f"b {flavor}:latency_p95"]
    assert "perf-check: 4 ratio(s) regressed: a:asyncio:latency_p95" in out


def test_a_noisy_first_round_is_cleared_by_the_re_measure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = _baselines(tmp_path, monkeypatch, capsys)
    # a burst of background load lands on two of the first round's three runs of rig a (1.4x on
    # its kernel path), then the machine is quiet again
    burst = [1.4, 1.0, 1.4]

    # judged on the first round alone, that is a (false) regression ...
    _install(monkeypatch, a=_FakeRig(load=burst), b=_FakeRig())
    assert check.main([*argv, "--remeasure", "0"]) == 1
    assert "REGRESSED" in capsys.readouterr().out

    # ... the re-measure outvotes it: 5 quiet runs, judged on the median of all 8
    noisy = _FakeRig(load=burst)
    _install(monkeypatch, a=noisy, b=_FakeRig())
    assert check.main(argv) == 0
    out = capsys.readouterr().out
    assert noisy.calls == 8
    rows = _rows(out)
    row = rows["a asyncio:latency_p95"]
    assert "ok after re-measure (median of all 8 runs)" in row
    assert "1.12 0.8 1.12 | 0.8 0.8 0.8 0.8 0.8" in row  # every run: first round | re-measure
    assert "REGRESSED" not in out
    assert "perf-check: 8 ratios within their allowance (4 after a re-measure)" in out


def test_rejudge_changes_only_failed_measured_ratios(tmp_path: Path) -> None:
    classes = {"x": "latency_p95", "y": "latency_p95", "gone": "latency_p95"}
    check.write_baselines({"rig": _measured({"x": [1.0], "y": [1.0], "gone": [1.0]}, classes)},
                          tmp_path)
    first = check.check({"rig": _measured({"x": [1.3, 1.2, 1.0], "y": [1.05, 1.0, 0.95]},
                                          classes)}, tmp_path)
    assert [(v.name, v.ok) for v in first] == [("gone", False), ("x", False), ("y", True)]
    assert [v.name for v in check.needs_remeasure(first)] == ["x"]  # MISSING stays missing

    more = {"rig": _measured({"x": [1.0, 1.01, 0.99, 1.02, 1.0], "y": [9.0] * 5}, classes)}
    after = {v.name: v for v in check.rejudge(first, more, tmp_path)}
    assert after["x"].ok and after["x"].runs == (1.3, 1.2, 1.0, 1.0, 1.01, 0.99, 1.02, 1.0)
    assert after["x"].first_round == 3 and after["x"].remeasured
    assert after["x"].now == pytest.approx(1.005)  # the median of all 8, not of the re-measure
    assert after["y"] is first[2]  # passed the first round: not judged again
    assert after["gone"] is first[0]


def _gated_entries() -> list[tuple[str, str, dict[str, object]]]:
    out = []
    for path in sorted(check.BASELINES.glob("*.json")):
        doc = check.load_baseline(path)
        out += [(doc["rig"], name, entry) for name, entry in doc["ratios"].items()
                if name not in check.DROPPED]
    return out


def test_every_gated_allowance_catches_a_1_5x_regression() -> None:
    entries = _gated_entries()
    assert len(entries) >= 10  # found the checked-in baselines
    for rig, name, entry in entries:
        klass, base = str(entry["class"]), float(entry["value"])  # type: ignore[arg-type]
        tol = entry.get("tolerance")
        assert tol is None or isinstance(tol, float)
        # 1.5x slower: a latency ratio 1.5x higher, a throughput ratio 1.5x lower
        worse = base * 1.5 if check.RATIO_CLASSES[klass][1] == "lower" else base / 1.5
        assert not check.within(klass, worse, base, tol), \
            f"{rig}:{name}: allowance {check.tolerance_of(klass, tol):.0%} lets 1.5x through"


def test_the_stored_tolerances_are_the_widened_policy() -> None:
    # WIDENED (reviewed code) is what `make perf-baseline` writes; the files must agree with it
    for rig, name, entry in _gated_entries():
        assert entry.get("tolerance") == check.WIDENED.get(name), f"{rig}:{name}"
