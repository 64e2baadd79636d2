"""The perf regression gate: ``python -m benchmarks.check [--update] [--runs 3] [--remeasure 5]``.

Runs the short (``--quick``) version of every rig ``--runs`` times, interleaved (rig A, B, C, D,
then A, B, C, D again, so a burst of background load does not land on every run of one rig),
takes the median of each ratio and compares it with ``perf/baselines/<rig>.json``.

A ratio that fails its allowance after that first round is not reported yet: the rigs that carry
failing ratios run ``--remeasure`` more times (interleaved again), and each failing ratio is
judged on the median of *all* its runs, first round and re-measure together. Only then does the
gate say REGRESSED. A burst of load that spoils a first round is outvoted by the quieter runs; a
real regression shows in every run and stays (see docs/PERFORMANCE.md, "Gate re-measure").

Only ratios are compared — kernel figure / same-run baseline figure — never absolute times, so
the gate holds on a slower or busier machine. Each ratio has a tolerance class of
PERFORMANCE.MD §5 (see :data:`benchmarks._common.RATIO_CLASSES`): latency-type ratios
(lower is better) fail when they rise more than their allowance, throughput-type ratios (higher
is better) fail when they drop more than 10 %.

Exit status: 0 all within allowance, 1 a ratio regressed (or disappeared), 2 usage error or a
missing/unreadable baseline. ``--update`` measures and rewrites the baselines instead; it is the
only way they change (``make perf-baseline``), so a new baseline is always a reviewed diff.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import RATIO_CLASSES, machine_info
from benchmarks._report import print_table, progress

BASELINES = Path(__file__).resolve().parents[1] / "perf" / "baselines"
"""Where the stored baselines live (``perf/baselines/`` at the root of the repository)."""

RIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bus_fanout": ("benchmarks.bus_fanout", ("--quick",)),
    "restart_storm": ("benchmarks.restart_storm", ("--quick",)),
    # phase 2 (file change -> event) is a quiet-period timer with no baseline: not gated
    "config_reload": ("benchmarks.config_reload", ("--quick", "--changes", "0")),
    "http": ("benchmarks.http", ("--quick",)),
}
"""Gated rigs: module and the arguments of their short run."""

REMEASURE_RUNS = 5
"""More interleaved quick runs of the rigs whose ratios failed the first round (``--remeasure``)."""

# Policy from three `--update` runs (each the median of 3 quick runs) on the 2-core dev machine
# while other jobs ran; "spread" = (max - min) / median of those three medians. A ratio whose
# spread comes near its allowance would make the gate flaky: it is dropped, or widened to about
# twice its spread when a looser bound still catches a real regression. docs/PERFORMANCE.md has
# the table.
_NOISY_P99 = "p99 of ~1k samples of a tens-of-µs path is scheduler noise"
DROPPED: dict[str, str] = {
    "asyncio:latency_8rx_p99": f"spread 49 % > 15 %: {_NOISY_P99}",
    "uvloop:latency_8rx_p99": f"spread 37 % > 15 %: {_NOISY_P99}",
    "asyncio:readyz_p99": f"spread 24 % > 15 %: {_NOISY_P99}",
    "uvloop:readyz_p99": "spread 11 %, too near 15 % (kept in the report)",
    "asyncio:restart_overhead_p95": "spread 42 % > 20 %: p95 of the 5 ms sleep's timer jitter",
    "uvloop:restart_overhead_p95": "spread 21 % > 20 %: p95 of the 5 ms sleep's timer jitter",
    "asyncio:crash_to_event_p95": "baseline is a sub-µs raise->except: a timer-resolution ratio",
    "uvloop:crash_to_event_p95": "baseline is a sub-µs raise->except; spread 41 %",
    "asyncio:restarts_per_s_10": "spread 27 % > 10 %",
    "uvloop:restarts_per_s_10": "spread 19 % > 10 %",
    "reload_p50": "spread 35 % > 20 % (the p95 ratio, the spec's measure, is stable: 5 %)",
    # bus and Queue latency cases run one after the other for 0.5 s each, so load on the other
    # core during one of them moves the ratio: medians 0.88..0.91 in five gate runs, then 1.28
    # (+44 %) in a sixth while a soak ran alongside
    "asyncio:latency_8rx_p95": "spread 44 % > 10 % under background load (1 run in 6)",
    "uvloop:latency_8rx_p95": "spread 17 % > 10 % under background load (1 run in 6)",
}
"""Ratios the rigs report but the gate ignores, with the reason (measured run-to-run spread)."""

WIDENED: dict[str, float] = {
    "asyncio:readyz_p95": 0.20,  # spread 9 %, class allows 10 %
    "uvloop:readyz_p95": 0.30,  # spread 14 %
    "render_p50": 0.25,  # spread 13 %
    # restarts/s: a 1.5x slower supervisor is -33 %, so the bound must stay inside -33 % (it was
    # -35 %, which let 1.5x through); -30 % is still ~1.8x the worst spread of medians (17 %)
    "asyncio:restarts_per_s_100": 0.30,  # spread 13 %, class allows 10 %
    "asyncio:restarts_per_s_1000": 0.30,  # spread 12 %
    "uvloop:restarts_per_s_100": 0.30,  # spread 5 %, its siblings up to 17 %
    "uvloop:restarts_per_s_1000": 0.30,  # spread 17 %
    # medians of 3 ranged 4.23..5.35 over five gate runs (-7..+18 % of the 4.54 baseline): GC
    # passes land in the tail of 150 samples. +40 %, not +50 %: +50 % let exactly 1.5x through
    "reload_p95": 0.40,
    # bus fan-out throughput (8 receivers vs the Queue idiom): the quick cases are best of 3
    # rounds and recv_many runs ~60 ms (it was one 7 ms round: runs of one ratio 13.8..33.3 on a
    # quiet machine). Five runs of the new rig: spread 17 % (asyncio recv_many), 10 % (asyncio
    # recv), 2-4 % (uvloop); on 2026-12-02 the same code and the seed's gave medians 8 % under
    # the 2026-11-26 baselines, i.e. the machine moves by about the old -10 % allowance by
    # itself. -20 % still catches a 1.5x slower bus (-33 %).
    "asyncio:throughput_recv_many_8rx": 0.20,
    "asyncio:throughput_recv_8rx": 0.20,
    "uvloop:throughput_recv_many_8rx": 0.20,
    "uvloop:throughput_recv_8rx": 0.20,
}
"""Ratios gated with a wider allowance than their class, because their spread needs it."""


@dataclass(frozen=True)
class Verdict:
    """The comparison of one ratio with its stored baseline."""

    rig: str
    name: str
    klass: str
    now: float | None
    baseline: float
    limit: float
    ok: bool
    note: str
    runs: tuple[float, ...] = ()
    """Every run's value, in order: the first round, then the re-measure (if any)."""
    first_round: int = 0
    """How many of :attr:`runs` belong to the first round (the rest are the re-measure)."""

    @property
    def allowed(self) -> str:
        """The bound as text: ``<= 1.10`` for lower-is-better ratios, ``>= 21.7`` otherwise."""
        better = RATIO_CLASSES[self.klass][1]
        return f"{'<=' if better == 'lower' else '>='} {self.limit:.4g}"

    @property
    def remeasured(self) -> bool:
        """Whether this verdict was judged on a re-measure as well as the first round."""
        return len(self.runs) > self.first_round


def tolerance_of(klass: str, override: float | None = None) -> float:
    """The allowed relative change of ``klass`` (or ``override`` when a ratio was widened)."""
    if klass not in RATIO_CLASSES:
        raise ValueError(f"unknown ratio class {klass!r}; expected one of {sorted(RATIO_CLASSES)}")
    return RATIO_CLASSES[klass][0] if override is None else override


def limit_of(klass: str, baseline: float, override: float | None = None) -> float:
    """The worst acceptable value of a ratio whose stored baseline is ``baseline``."""
    tol = tolerance_of(klass, override)
    if RATIO_CLASSES[klass][1] == "lower":
        return baseline * (1 + tol)
    return baseline * (1 - tol)


def within(klass: str, now: float, baseline: float, override: float | None = None) -> bool:
    """Whether ``now`` is no worse than its baseline by more than the class allows."""
    limit = limit_of(klass, baseline, override)
    if now != now:  # NaN: the rig could not measure it
        return False
    return now <= limit if RATIO_CLASSES[klass][1] == "lower" else now >= limit


def judge(rig: str, name: str, entry: Mapping[str, Any], runs: Sequence[float],
          first_round: int | None = None) -> Verdict:
    """Judge one ratio on the median of ``runs`` against its stored baseline ``entry``.

    ``first_round`` says how many of ``runs`` came from the first round (all of them when not
    given); a verdict on more runs than that is a re-measure and says so in its note.
    """
    klass, base = entry["class"], float(entry["value"])
    override = entry.get("tolerance")
    limit = limit_of(klass, base, override)
    first = len(runs) if first_round is None else first_round
    if not runs:
        return Verdict(rig, name, klass, None, base, limit, False,
                       "MISSING (the rig no longer reports it)", (), 0)
    value = statistics.median(runs)
    ok = within(klass, value, base, override)
    better = RATIO_CLASSES[klass][1]
    improved = value < base / (1 + tolerance_of(klass, override)) if better == "lower" \
        else value > base * (1 + tolerance_of(klass, override))
    note = "REGRESSED" if not ok else ("ok, improved (update?)" if improved else "ok")
    if len(runs) > first:
        note += f" after re-measure (median of all {len(runs)} runs)"
    return Verdict(rig, name, klass, value, base, limit, ok, note, tuple(runs), first)


def compare(rig: str, stored: Mapping[str, Any], measured: Measured) -> list[Verdict]:
    """Judge every gated ratio of ``rig`` (median of its runs) against its baseline document."""
    out: list[Verdict] = []
    for name, entry in stored["ratios"].items():
        if name in DROPPED:  # dropped after the baseline was written: policy is reviewed code
            continue
        out.append(judge(rig, name, entry, measured.values.get(name, [])))
    return out


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and validate one baseline file; errors name the file and the bad entry."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no baseline {path}: run `make perf-baseline` to create it") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    ratios = doc.get("ratios") if isinstance(doc, dict) else None
    if not isinstance(ratios, dict):
        raise ValueError(f"{path}: expected an object with a 'ratios' object")
    for name, entry in ratios.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), int | float):
            raise ValueError(f"{path}: ratios.{name}: expected {{'value': number, 'class': ...}}")
        if entry.get("class") not in RATIO_CLASSES:
            raise ValueError(f"{path}: ratios.{name}.class: {entry.get('class')!r} is not one "
                             f"of {sorted(RATIO_CLASSES)}")
        tol = entry.get("tolerance")
        if tol is not None and not (isinstance(tol, int | float) and 0 < tol < 1):
            raise ValueError(f"{path}: ratios.{name}.tolerance: expected 0 < number < 1")
    return doc  # type: ignore[no-any-return]


@dataclass
class Measured:
    """Every run's value of every ratio of one rig, with the ratios' classes."""

    values: dict[str, list[float]]
    classes: dict[str, str]

    def median(self) -> dict[str, float]:
        """The median of each ratio over the runs."""
        return {k: statistics.median(v) for k, v in self.values.items()}

    def spread(self, name: str) -> float:
        """(max - min) / median of one ratio over the runs."""
        v = self.values[name]
        mid = statistics.median(v)
        return (max(v) - min(v)) / mid if mid else float("nan")


def baseline_doc(rig: str, measured: Measured, machine: Mapping[str, Any]) -> dict[str, Any]:
    """The baseline document of ``rig``: median ratios (dropped ones left out) and classes."""
    ratios: dict[str, Any] = {}
    for name, value in sorted(measured.median().items()):
        if name in DROPPED:
            continue
        entry: dict[str, Any] = {"value": round(value, 6), "class": measured.classes[name],
                                 "runs": [round(v, 6) for v in measured.values[name]],
                                 "spread": round(measured.spread(name), 4)}
        if name in WIDENED:
            entry["tolerance"] = WIDENED[name]
        ratios[name] = entry
    return {"rig": rig, "machine": dict(machine), "ratios": ratios,
            "note": "written by `make perf-baseline` (python -m benchmarks.check "
                    "--update); median of the runs; kernel / same-run baseline"}


def write_baselines(measured: Mapping[str, Measured], directory: Path) -> list[Path]:
    """Write one baseline file per rig into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    paths = []
    for rig, m in measured.items():
        path = directory / f"{rig}.json"
        path.write_text(json.dumps(baseline_doc(rig, m, machine), indent=2) + "\n")
        paths.append(path)
    return paths


def check(measured: Mapping[str, Measured], directory: Path) -> list[Verdict]:
    """Compare the median of each measured ratio with the baselines in ``directory``."""
    verdicts: list[Verdict] = []
    for rig, m in measured.items():
        verdicts += compare(rig, load_baseline(directory / f"{rig}.json"), m)
    return verdicts


RunRig = Callable[[str, str], Mapping[str, Any]]
"""One quick run of a rig: ``(rig, loops) -> results`` with ``ratios`` and ``ratio_classes``."""


def run_quick(rig: str, loops: str) -> Mapping[str, Any]:
    """Run the short version of ``rig`` (:data:`RIGS`) once on ``loops``; return its results."""
    module_name, quick = RIGS[rig]
    module = importlib.import_module(module_name)
    args = module.parser().parse_args([*quick, "--loops", loops, "--no-progress"])
    results: Mapping[str, Any] = module.run(args)
    return results


def measure(rigs: Sequence[str], runs: int, loops: str, *, show: bool,
            run_rig: RunRig = run_quick, label: str = "perf gate") -> dict[str, Measured]:
    """Run the quick version of each rig ``runs`` times, interleaved; collect the ratios."""
    out = {rig: Measured({}, {}) for rig in rigs}
    with progress(runs * len(rigs), label, enabled=show) as bar:
        for i in range(runs):
            for rig in rigs:
                bar.advance(f"{label} {i + 1}/{runs}: {rig}")
                results = run_rig(rig, loops)
                for name, value in results["ratios"].items():
                    out[rig].values.setdefault(name, []).append(float(value))
                    out[rig].classes[name] = results["ratio_classes"][name]
    return out


def needs_remeasure(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The verdicts a re-measure can change: failed, but measured (a MISSING ratio stays so)."""
    return [v for v in verdicts if not v.ok and v.now is not None]


def rejudge(verdicts: Sequence[Verdict], more: Mapping[str, Measured],
            directory: Path) -> list[Verdict]:
    """Judge each failed ratio again on all its runs: its first round plus ``more``.

    Verdicts that passed the first round, and ratios whose rig was not re-measured, are kept
    as they are. The order of ``verdicts`` is kept.
    """
    retry = {(v.rig, v.name) for v in needs_remeasure(verdicts) if v.rig in more}
    stored = {rig: load_baseline(directory / f"{rig}.json")["ratios"]
              for rig in {rig for rig, _ in retry}}
    out: list[Verdict] = []
    for v in verdicts:
        if (v.rig, v.name) not in retry:
            out.append(v)
            continue
        runs = [*v.runs, *more[v.rig].values.get(v.name, [])]
        out.append(judge(v.rig, v.name, stored[v.rig][v.name], runs, first_round=len(v.runs)))
    return out


def gate(rigs: Sequence[str], directory: Path, *, runs: int = 3,
         remeasure: int = REMEASURE_RUNS, loops: str = "asyncio,uvloop", show: bool = False,
         run_rig: RunRig = run_quick, say: Callable[[str], None] = print) -> list[Verdict]:
    """The whole gate: a first round of ``runs``, then ``remeasure`` more runs of the rigs
    whose ratios failed it, each failed ratio judged on all its runs. Returns the verdicts."""
    first = measure(rigs, runs, loops, show=show, run_rig=run_rig)
    verdicts = check(first, directory)
    failed = needs_remeasure(verdicts)
    if not failed or remeasure < 1:
        return verdicts
    again = sorted({v.rig for v in failed}, key=list(rigs).index)
    say(f"perf-check: {len(failed)} ratio(s) over their allowance after the first round ("
        + ", ".join(f"{v.rig}:{v.name} {v.now:.4g} vs {v.allowed}" for v in failed)
        + f"); re-measuring {', '.join(again)} with {remeasure} more interleaved runs")
    more = measure(again, remeasure, loops, show=show, run_rig=run_rig, label="re-measure")
    return rejudge(verdicts, more, directory)


def _runs_text(v: Verdict) -> str:
    first = " ".join(f"{x:.3g}" for x in v.runs[:v.first_round])
    if not v.remeasured:
        return first or "-"
    return f"{first} | " + " ".join(f"{x:.3g}" for x in v.runs[v.first_round:])


def print_verdicts(verdicts: Sequence[Verdict]) -> None:
    """The gate's table: every run's value (first round | re-measure), the judged median, the
    baseline, the allowed bound and the verdict."""
    rows = [(f"{v.rig} {v.name}", v.klass, _runs_text(v),
             v.now if v.now is not None else "-", v.baseline, v.allowed, v.note)
            for v in verdicts]
    print_table("Perf regression gate (ratio = kernel / same-run baseline)",
                ["ratio", "class", "runs (first round | re-measure)", "judged (median)",
                 "baseline", "allowed", "verdict"], rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, re-measure what fails, judge (exit 1 on a regression), or
    ``--update`` the baselines."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--update", action="store_true",
                   help="rewrite the baselines from this measurement (deliberately!)")
    p.add_argument("--runs", type=int, default=3, help="quick runs per rig; the median counts")
    p.add_argument("--remeasure", type=int, default=REMEASURE_RUNS, metavar="N",
                   help="more runs of the rigs whose ratios fail the first round; a failed ratio "
                        "is judged on all its runs (default: %(default)s; 0: no re-measure)")
    p.add_argument("--rigs", default=",".join(RIGS),
                   help=f"comma-separated rigs (default: all of {', '.join(RIGS)})")
    p.add_argument("--loops", default="asyncio,uvloop", help="loop flavors (default: both)")
    p.add_argument("--baselines", type=Path, default=BASELINES, metavar="DIR",
                   help=f"baseline directory (default: {BASELINES})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    rigs = [r.strip() for r in args.rigs.split(",") if r.strip()]
    unknown = [r for r in rigs if r not in RIGS]
    if unknown or args.runs < 1 or args.remeasure < 0:
        p.error(f"unknown rig(s) {unknown}; expected some of {list(RIGS)}" if unknown
                else f"--runs must be >= 1, got {args.runs}" if args.runs < 1
                else f"--remeasure must be >= 0, got {args.remeasure}")
    show = not args.no_progress and sys.stderr.isatty()
    if args.update:
        measured = measure(rigs, args.runs, args.loops, show=show)
        for path in write_baselines(measured, args.baselines):
            print(f"baseline written: {path}")
        for rig, m in measured.items():
            for name in m.values:
                mark = "dropped: " + DROPPED[name] if name in DROPPED else ""
                print(f"  {rig}:{name}  median {m.median()[name]:.4g}  "
                      f"spread {m.spread(name):.1%}  {mark}")
        return 0
    for rig in rigs:  # fail fast, before minutes of measuring
        try:
            load_baseline(args.baselines / f"{rig}.json")
        except ValueError as exc:
            print(f"perf-check: {exc}", file=sys.stderr)
            return 2
    verdicts = gate(rigs, args.baselines, runs=args.runs, remeasure=args.remeasure,
                    loops=args.loops, show=show)
    print_verdicts(verdicts)
    bad = [v for v in verdicts if not v.ok]
    if bad:
        print(f"perf-check: {len(bad)} ratio(s) regressed: "
              + ", ".join(f"{v.rig}:{v.name}" for v in bad))
        return 1
    cleared = [v for v in verdicts if v.remeasured]
    print(f"perf-check: {len(verdicts)} ratios within their allowance"
          + (f" ({len(cleared)} after a re-measure)" if cleared else ""))
    return 0

if __name__ == "__main__":
    sys.exit(main())
