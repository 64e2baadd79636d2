"""Shared helpers of the perf rigs: percentiles, machine info, JSON output, common flags."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def percentiles(
    samples: Sequence[float], points: Sequence[float] = (50, 95, 99)
) -> dict[str, float]:
    """Return ``{"p50": ..., "p95": ..., "p99": ...}`` (nearest-rank) of ``samples``."""
    if not samples:
        return {f"p{int(p) if float(p).is_integer() else p}": float("nan") for p in points}
    ordered = sorted(samples)
    out: dict[str, float] = {}
    for p in points:
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        key = f"p{int(p) if float(p).is_integer() else p}"
        out[key] = ordered[rank]
    out["mean"] = statistics.fmean(ordered)
    out["max"] = ordered[-1]
    return out


def loop_versions() -> dict[str, str | None]:
    """Versions of the event loops the rigs can use."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        uv: str | None = version("uvloop")
    except PackageNotFoundError:  # pragma: no cover
        uv = None
    return {"asyncio": platform.python_version(), "uvloop": uv}


def machine_info() -> dict[str, Any]:
    """Machine, Python and loop versions recorded with every result."""
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loops": loop_versions(),
    }


def new_loop(flavor: str) -> Any:
    """Return a new event loop of ``flavor`` ("asyncio" or "uvloop")."""
    import asyncio

    if flavor == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if flavor != "asyncio":
        raise ValueError(f"unknown loop flavor {flavor!r}; expected asyncio or uvloop")
    return asyncio.new_event_loop()


def run_on_loop(flavor: str, coro: Any) -> Any:
    """Run ``coro`` to completion on a fresh loop of ``flavor`` (no case inherits another's
    state), after a full collection so a previous case's garbage is not collected mid-case."""
    import gc

    loop = new_loop(flavor)
    try:
        gc.collect()
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every rig shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", metavar="FILE", type=Path,
                        help="write machine-readable results to FILE")
    parser.add_argument("--quick", action="store_true",
                        help="short run (seconds, for smoke tests and the regression gate)")
    parser.add_argument("--loops", default="asyncio,uvloop",
                        help="comma-separated loop flavors to measure (default: both)")
    parser.add_argument("--plot", metavar="FILE.png", type=Path,
                        help="draw latency distributions and throughput curves into FILE.png")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is also off when stderr is not a terminal)")
    return parser


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw the progress bar: asked for, and stderr is a terminal."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def loops_of(args: argparse.Namespace) -> list[str]:
    """The loop flavors named by ``--loops``."""
    return [f.strip() for f in args.loops.split(",") if f.strip()]


RAW = "raw"
"""Key of the raw samples a rig keeps for its plot; never written to JSON (too large)."""


def write_json(path: Path | None, rig: str, results: dict[str, Any]) -> dict[str, Any]:
    """Wrap ``results`` with the rig name and machine info; write it to ``path`` when given.

    The raw samples under :data:`RAW` are left out: the percentiles and ratios are the record.
    """
    kept = {k: v for k, v in results.items() if k != RAW}
    doc = {"rig": rig, "machine": machine_info(), "results": kept}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    return doc


# Tolerance classes of PERFORMANCE.MD §5: (allowed relative change, which direction is better).
# Every ratio is kernel / baseline, so "lower" ratios are latencies and costs, "higher" rates.
RATIO_CLASSES: dict[str, tuple[float, str]] = {
    "latency_p95": (0.10, "lower"),
    "latency_p99": (0.15, "lower"),
    "throughput": (0.10, "higher"),
    "restart_reload_p95": (0.20, "lower"),
}


def add_ratio(results: dict[str, Any], name: str, kernel: float, baseline: float, *,
              klass: str, unit: str) -> None:
    """Record ``kernel / baseline`` as ``results["ratios"][name]`` with its tolerance class.

    ``results["ratios"]`` stays a flat ``{name: float}`` (what the regression gate compares);
    the class and the two figures go to ``ratio_classes`` and ``ratio_detail``.
    """
    if klass not in RATIO_CLASSES:
        raise ValueError(f"unknown ratio class {klass!r} for {name!r}; "
                         f"expected one of {sorted(RATIO_CLASSES)}")
    value = kernel / baseline if baseline else float("nan")
    results.setdefault("ratios", {})[name] = value
    results.setdefault("ratio_classes", {})[name] = klass
    results.setdefault("ratio_detail", {})[name] = {
        "kernel": kernel, "baseline": baseline, "unit": unit,
        "better": RATIO_CLASSES[klass][1]}


def thin(samples: Sequence[float], limit: int = 20_000) -> list[float]:
    """Every k-th sample so at most ``limit`` remain (for plots; the order is kept)."""
    step = max(1, len(samples) // limit)
    return list(samples[::step])
