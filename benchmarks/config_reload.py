"""Config reload rig: validate+swap latency, RSS over a reload loop, file change -> ConfigUpdated.

    python -m benchmarks.config_reload [--rate 10] [--duration 60] [--quick] [--json FILE]
                                            [--plot FILE.png] [--changes 50]

Phase 1 reloads a ~4 KB TOML file at ``--rate`` Hz for ``--duration`` seconds (the file flips
between two valid contents, so every reload applies a new snapshot) and times
``ConfigCell.reload()``: read, parse, merge, validate, swap, publish, log. The same-run baseline
is a plain ``tomllib.loads`` of the same text. RSS is sampled at the start and the end.

Phase 2 measures, per event loop, the time from an atomic file replace to the
``ConfigUpdated`` event a bus receiver observes, with watchfiles and with the polling fallback.

Targets (reported, not asserted): validate+swap p95 <= 3 ms; RSS flat; file change ->
ConfigUpdated p95 <= 50 ms. The ratios the regression gate compares (reload / ``tomllib.loads``)
are in ``results["ratios"]``; ``--changes 0`` skips phase 2 (it has no baseline to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import psutil

from benchmarks._common import (
    RAW,
    add_ratio,
    base_parser,
    loops_of,
    percentiles,
    run_on_loop,
    show_progress,
    thin,
)
from benchmarks._report import Panel, Steps, progress, rig_main, save_plot
from ron_kernel import Bus, Config, KernelEvent, Metrics
from ron_kernel.config import ConfigCell
from ron_kernel.logging import configure_logging

RIG = "config_reload"

TARGET_BYTES = 4096


def config_text(capacity: int, size: int = TARGET_BYTES) -> str:
    """A complete config file of about ``size`` bytes (every key set, padded with comments)."""
    body = f"""# ron-kernel configuration (perf rig fixture)
[supervisor]
min_backoff = "100ms"
max_backoff = "30s"
restart_cap = 5
restart_window = "60s"
reset_after = "30s"

[bus]
capacity = {capacity}

[amnesia]
enabled = false

[pq]
mode = "hybrid"
require_pq = false

[observability]
expose_http = true
addr = "127.0.0.1:9909"

[log]
format = "json"
level = "info"

[shutdown]
drain_deadline = "5s"
"""
    filler = "# " + "operator notes: " * 4 + "\n"
    while len(body) + len(filler) <= size:
        body += filler
    return body


def _ms(samples: list[float]) -> dict[str, float]:
    return {k: round(v * 1000, 4) for k, v in percentiles(samples).items()}


def reload_loop(path: Path, rate: float, duration: float) -> dict[str, Any]:
    """Phase 1: paced reloads; returns latency percentiles (ms), the baseline and RSS (MiB)."""
    texts = [config_text(4096), config_text(8192)]
    path.write_text(texts[0])
    proc = psutil.Process()
    metrics = Metrics()
    bus: Bus[KernelEvent] = Bus(64, metrics=metrics)
    rx = bus.subscribe()
    cell = ConfigCell(Config.load(path, env={}), path=path, env={}, bus=bus, metrics=metrics)
    # warm-up: imports, caches, first allocations are not what a running kernel pays
    for i in range(20):
        path.write_text(texts[(i + 1) % 2])
        cell.reload()
        rx.try_recv_many()
    rss_start = proc.memory_info().rss
    rss_trace: list[tuple[int, float]] = [(0, rss_start / 2**20)]
    reload_s: list[float] = []
    parse_s: list[float] = []
    rejected = 0
    period = 1.0 / rate
    start = time.perf_counter()
    tick = 0
    while time.perf_counter() - start < duration:
        text = texts[tick % 2]
        path.write_text(text)
        t0 = time.perf_counter()
        ok = cell.reload()
        t1 = time.perf_counter()
        tomllib.loads(text)
        t2 = time.perf_counter()
        rejected += not ok
        reload_s.append(t1 - t0)
        parse_s.append(t2 - t1)
        rx.try_recv_many()  # the event was published; keep the ring from lapping
        tick += 1
        if tick % 10 == 0:  # outside the timed window; ~10 µs
            rss_trace.append((tick, proc.memory_info().rss / 2**20))
        delay = start + tick * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    rss_end = proc.memory_info().rss
    reload_p, parse_p = _ms(reload_s), _ms(parse_s)
    return {
        "file_bytes": len(texts[0].encode()),
        "reloads": len(reload_s),
        "rejected": rejected,
        "final_version": cell.version,
        "validate_swap_ms": reload_p,
        "baseline_tomllib_loads_ms": parse_p,
        "ratio_p50": round(reload_p["p50"] / parse_p["p50"], 2),
        "ratio_p95": round(reload_p["p95"] / parse_p["p95"], 2),
        "rss_start_mib": round(rss_start / 2**20, 2),
        "rss_end_mib": round(rss_end / 2**20, 2),
        "rss_growth_mib": round((rss_end - rss_start) / 2**20, 3),
        "rate": rate,
        RAW: {"validate_swap_ms": thin([v * 1000 for v in reload_s]),
              "tomllib_loads_ms": thin([v * 1000 for v in parse_s]),
              "rss_mib": rss_trace},
    }


def _stage(path: Path, text: str) -> None:
    # a tiny synchronous write, outside the timed window
    path.write_text(text)


async def _change_latency(path: Path, changes: int, polling: bool) -> list[float]:
    texts = [config_text(4096), config_text(8192)]
    _stage(path, texts[0])
    bus: Bus[KernelEvent] = Bus(64)
    rx = bus.subscribe()
    cell = ConfigCell(Config.load(path, env={}), path=path, env={}, bus=bus)
    task = cell.start_watching(polling=polling)
    out: list[float] = []
    try:
        await asyncio.sleep(0.3)
        tmp = path.with_name(path.name + ".tmp")
        for i in range(changes):
            _stage(tmp, texts[(i + 1) % 2])
            t0 = time.perf_counter()
            os.replace(tmp, path)
            await asyncio.wait_for(rx.recv(), 5)
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return out


def change_latency(path: Path, loops: list[str], changes: int,
                   bar: Steps | None = None) -> dict[str, Any]:
    """Phase 2: atomic replace -> ConfigUpdated observed, per loop and watch mode (ms).

    The raw samples (ms) are under ``results[RAW]``, keyed like the percentiles.
    """
    results: dict[str, Any] = {RAW: {}}
    for flavor in loops:
        for mode, polling in (("watchfiles", False), ("polling", True)):
            if bar is not None:
                bar.advance(f"file change -> event, {flavor}/{mode}")
            samples = run_on_loop(flavor, _change_latency(path, changes, polling))
            results[f"{flavor}/{mode}"] = _ms(samples)
            results[RAW][f"{flavor}/{mode}"] = [v * 1000 for v in samples]
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run both phases and return the results as a plain dict of numbers."""
    # quick: more reloads per second for long enough to give p95 a hundred-odd samples
    rate, duration = (max(args.rate, 50.0), 3.0) if args.quick else (args.rate, args.duration)
    changes = min(15, args.changes) if args.quick else args.changes
    loops = loops_of(args) if changes > 0 else []
    with open(os.devnull, "w") as sink, tempfile.TemporaryDirectory() as tmp, \
            progress(1 + 2 * len(loops), "config reload", enabled=show_progress(args)) as bar:
        # log lines are produced and formatted (the reload pays for them) but not printed
        configure_logging(format="json", level="info", stream=sink)
        try:
            path = Path(tmp) / "Config.toml"
            bar.advance(f"reload loop, {rate:g} Hz for {duration:g} s")
            reload = reload_loop(path, rate, duration)
            change = change_latency(path, loops, changes, bar)
        finally:
            configure_logging()
    results: dict[str, Any] = {
        "config": {"quick": bool(args.quick), "loops": loops, "rate": rate,
                   "duration": duration, "changes": changes},
        "reload": reload, "file_change_to_event_ms": change,
        RAW: {"reload": reload.pop(RAW), "change_ms": change.pop(RAW)},
    }
    v, b = reload["validate_swap_ms"], reload["baseline_tomllib_loads_ms"]
    add_ratio(results, "reload_p50", v["p50"], b["p50"], klass="restart_reload_p95", unit="ms")
    add_ratio(results, "reload_p95", v["p95"], b["p95"], klass="restart_reload_p95", unit="ms")
    return results


def plot(results: dict[str, Any], path: Path) -> Path:
    """Reload latency vs ``tomllib.loads``, RSS over the loop, file change -> event."""
    raw = results[RAW]
    trace = raw["reload"]["rss_mib"]
    panels = [
        Panel(f"Reload of a {results['reload']['file_bytes']:,} B TOML file vs parsing it",
              "what is timed", "ms per call (log scale)", logy=True,
              distributions={"ConfigCell.reload()\nread+validate+swap+publish":
                             raw["reload"]["validate_swap_ms"],
                             "tomllib.loads\n(baseline)": raw["reload"]["tomllib_loads_ms"]}),
        Panel(f"RSS over the reload loop ({results['config']['rate']:g} Hz)", "reloads",
              "RSS (MiB)", lines={"RSS": ([t for t, _ in trace], [m for _, m in trace])}),
    ]
    if raw["change_ms"]:
        panels.append(Panel("Atomic file replace -> ConfigUpdated at a receiver",
                            "loop / watch mode", "ms", distributions={
                                k.replace("/", "\n"): v for k, v in raw["change_ms"].items()}))
    return save_plot(path, "ron-kernel config reload (same-run baseline: tomllib.loads)", panels)


def report(results: dict[str, Any]) -> str:
    """Plain-text summary with the targets next to the figures."""
    r = results["reload"]
    v, b = r["validate_swap_ms"], r["baseline_tomllib_loads_ms"]
    lines = [
        f"config reload: {r['reloads']} reloads of a {r['file_bytes']} B file "
        f"at {r['rate']:g} Hz (rejected {r['rejected']})",
        f"  validate+swap   p50 {v['p50']:.3f} ms  p95 {v['p95']:.3f} ms  p99 {v['p99']:.3f} ms"
        "  (target p95 <= 3 ms)",
        f"  tomllib.loads   p50 {b['p50']:.3f} ms  p95 {b['p95']:.3f} ms  p99 {b['p99']:.3f} ms"
        f"  (baseline; ratio p50 {r['ratio_p50']}x, p95 {r['ratio_p95']}x)",
        f"  RSS start {r['rss_start_mib']} MiB, end {r['rss_end_mib']} MiB "
        f"(growth {r['rss_growth_mib']} MiB)",
    ]
    for name, p in results["file_change_to_event_ms"].items():
        lines.append(f"  file change -> ConfigUpdated [{name}]  p50 {p['p50']:.1f} ms  "
                     f"p95 {p['p95']:.1f} ms  (target p95 <= 50 ms)")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The rig's command-line flags."""
    p = base_parser(__doc__.splitlines()[0] if __doc__ else "config reload rig")
    p.add_argument("--rate", type=float, default=10.0, help="reloads per second (10)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of reloads (60)")
    p.add_argument("--changes", type=int, default=50,
                   help="file changes timed per loop and watch mode (50; 0 skips phase 2)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: run, print the summary, optionally write JSON and a plot."""
    return rig_main(RIG, parser(), run, report, plot, argv)


if __name__ == "__main__":
    main()
