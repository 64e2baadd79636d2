"""Perf rig: the supervisor under crashes, against a hand-written asyncio restart loop.

``python -m benchmarks.restart_storm [--quick] [--loops asyncio,uvloop] [--json FILE]``

Measures, on each loop flavor:

* ``crash_to_event_ms``: a child raises -> a bus subscriber holds ``ServiceCrashed``
  (p50/p95/p99). The baseline has no event: it is the hand-written loop's raise -> ``except``.
* ``restart_overhead_ms``: (raise -> next start) minus the chosen backoff delay (fixed 5 ms,
  so jitter does not blur it), p50/p95/p99, for the supervisor and for the baseline
  ``while True: try: await child() except Exception: await asyncio.sleep(delay)``.
* ``restarts_per_s``: every child crashes at once on start, backoff 0, for 10, 100 and 1,000
  children, sustained over a fixed time.
* ``idle_cpu_pct``: process CPU time over wall time with 1,000 healthy children (and with
  1,000 bare tasks as the baseline).

Crash logs are rendered as JSON (with traceback) into ``os.devnull``: their cost is included,
as in production. ``run(args)`` returns a plain dict of numbers (``per_loop``, and the
``ratios`` the regression gate compares); ``main()`` prints it, ``--plot FILE.png`` draws
restarts/s vs children and the latency distributions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RAW,
    add_ratio,
    base_parser,
    loops_of,
    new_loop,
    percentiles,
    show_progress,
    thin,
)
from benchmarks._report import Panel, progress, rig_main, save_plot
from ron_kernel import Bus, KernelEvent
from ron_kernel.logging import configure_logging
from ron_kernel.supervisor import ChildContext, Supervisor

RIG = "restart_storm"
BACKOFF = 0.005
HUGE_CAP = 10**9


def _ms(samples: list[float]) -> dict[str, float]:
    return {k: round(v * 1e3, 4) for k, v in percentiles(samples).items()}


async def crash_to_event(samples: int) -> dict[str, Any]:
    """Latency from ``raise`` in a child to ``ServiceCrashed`` in a subscriber's hands."""
    bus: Bus[KernelEvent] = Bus()
    rx = bus.subscribe()
    sup = Supervisor(bus=bus, min_backoff=0.0, max_backoff=0.0, restart_cap=HUGE_CAP,
                     restart_window=0.001)
    trigger, started = asyncio.Event(), asyncio.Event()
    crashed_at = [0.0]

    async def child(ctx: ChildContext) -> None:
        started.set()
        await trigger.wait()
        trigger.clear()
        crashed_at[0] = time.perf_counter()
        raise ValueError("boom")

    sup.add("svc", child)
    await sup.start()
    lat: list[float] = []
    for _ in range(samples):
        await started.wait()
        started.clear()
        trigger.set()
        await rx.recv()
        lat.append(time.perf_counter() - crashed_at[0])
    await sup.shutdown(1)

    # Baseline: the same raise caught by a hand-written loop (no event, no log, no metrics).
    base: list[float] = []
    trigger.clear()

    async def bare_child() -> None:
        started.set()
        await trigger.wait()
        trigger.clear()
        crashed_at[0] = time.perf_counter()
        raise ValueError("boom")

    async def bare_loop() -> None:
        while len(base) < samples:
            try:
                await bare_child()
            except Exception:
                base.append(time.perf_counter() - crashed_at[0])

    task = asyncio.get_running_loop().create_task(bare_loop())
    while not task.done():
        await started.wait()
        started.clear()
        trigger.set()
        await asyncio.sleep(0)
    return {"supervisor": _ms(lat), "baseline_except": _ms(base),
            RAW: {"supervisor": thin([v * 1e3 for v in lat]),
                  "baseline_except": thin([v * 1e3 for v in base])}}


async def _restart_overhead_sup(samples: int) -> list[float]:
    sup = Supervisor(min_backoff=BACKOFF, max_backoff=BACKOFF, restart_cap=HUGE_CAP,
                     restart_window=0.001)
    marks: list[tuple[float, float]] = []
    crashed_at = [0.0]
    done = asyncio.Event()

    async def child(ctx: ChildContext) -> None:
        now = time.perf_counter()
        if crashed_at[0]:
            marks.append((crashed_at[0], now))
        if len(marks) >= samples:
            done.set()
            await ctx.shutdown.wait()
            return
        crashed_at[0] = time.perf_counter()
        raise ValueError("boom")

    sup.add("svc", child)
    await sup.start()
    await done.wait()
    await sup.shutdown(1)
    return [start - crash - BACKOFF for crash, start in marks]


async def _restart_overhead_baseline(samples: int) -> list[float]:
    marks: list[tuple[float, float]] = []
    crashed_at = [0.0]

    async def child() -> None:
        now = time.perf_counter()
        if crashed_at[0]:
            marks.append((crashed_at[0], now))
        crashed_at[0] = time.perf_counter()
        raise ValueError("boom")

    while len(marks) < samples:
        try:
            await child()
        except Exception:
            await asyncio.sleep(BACKOFF)
    return [start - crash - BACKOFF for crash, start in marks]


async def restart_overhead(samples: int) -> dict[str, Any]:
    """(raise -> next start) - backoff delay, supervisor vs the hand-written loop."""
    sup = await _restart_overhead_sup(samples)
    base = await _restart_overhead_baseline(samples)
    return {"supervisor": _ms(sup), "baseline_loop": _ms(base), "backoff_ms": BACKOFF * 1e3,
            RAW: {"supervisor": thin([v * 1e3 for v in sup]),
                  "baseline_loop": thin([v * 1e3 for v in base])}}


async def _storm(children: int, seconds: float, make: Callable[[int, list[int]],
                 Awaitable[Callable[[], Awaitable[None]]]]) -> float:
    counter = [0]
    stop = await make(children, counter)
    await asyncio.sleep(seconds * 0.1)  # warm up
    c0, t0 = counter[0], time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (counter[0] - c0) / (time.perf_counter() - t0)
    await stop()
    return rate


async def _sup_storm(children: int, counter: list[int]) -> Callable[[], Awaitable[None]]:
    sup = Supervisor(min_backoff=0.0, max_backoff=0.0, restart_cap=HUGE_CAP,
                     restart_window=0.001)

    async def child(ctx: ChildContext) -> None:
        counter[0] += 1
        raise ValueError("boom")

    for i in range(children):
        sup.add(f"c{i}", child)
    await sup.start()
    return lambda: sup.shutdown(2)


async def _bare_storm(children: int, counter: list[int]) -> Callable[[], Awaitable[None]]:
    async def child() -> None:
        counter[0] += 1
        raise ValueError("boom")

    async def keep(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await child()
            except Exception:
                await asyncio.sleep(0)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(keep(stop)) for _ in range(children)]

    async def halt() -> None:
        stop.set()
        await asyncio.gather(*tasks)

    return halt


async def restarts_per_second(sizes: list[int], seconds: float) -> dict[str, Any]:
    """Sustained restarts/s with every child crashing at once, backoff 0."""
    out: dict[str, Any] = {}
    for n in sizes:
        sup = await _storm(n, seconds, _sup_storm)
        base = await _storm(n, seconds, _bare_storm)
        out[str(n)] = {"supervisor": round(sup), "baseline_loop": round(base),
                       "ratio": round(sup / base, 3) if base else None}
    return out


async def idle_cpu(children: int, seconds: float) -> dict[str, Any]:
    """CPU % of one core with ``children`` healthy children, vs as many bare tasks."""

    async def measure() -> float:
        await asyncio.sleep(0.05)
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        return 100 * (time.process_time() - c0) / (time.perf_counter() - w0)

    sup = Supervisor()

    async def healthy(ctx: ChildContext) -> None:
        ctx.ready()
        await ctx.shutdown.wait()

    for i in range(children):
        sup.add(f"c{i}", healthy)
    await sup.start()
    sup_pct = await measure()
    await sup.shutdown(5)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(stop.wait()) for _ in range(children)]
    base_pct = await measure()
    stop.set()
    await asyncio.gather(*tasks)
    return {"children": children, "supervisor_pct": round(sup_pct, 3),
            "baseline_pct": round(base_pct, 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement on every requested loop; return a plain dict of numbers."""
    with open(os.devnull, "w") as sink:
        configure_logging(format="json", level="info", stream=sink)
        try:
            return _run(args)
        finally:
            configure_logging()


def _run(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    samples = 300 if quick else 2000
    storm_s = 0.5 if quick else 2.0
    idle_s = 1.0 if quick else 3.0
    sizes = [10, 100, 1000]
    flavors = loops_of(args)
    out: dict[str, Any] = {
        "config": {"quick": quick, "loops": flavors, "samples": samples,
                   "storm_seconds": storm_s, "idle_seconds": idle_s, "backoff_ms": BACKOFF * 1e3},
        "per_loop": {}, RAW: {},
    }
    with progress(len(flavors) * (3 + len(sizes)), "restart storm",
                  enabled=show_progress(args)) as bar:
        for flavor in flavors:
            loop = new_loop(flavor)
            try:
                res: dict[str, Any] = {}
                bar.advance(f"{flavor}: crash -> ServiceCrashed")
                res["crash_to_event_ms"] = loop.run_until_complete(crash_to_event(samples))
                bar.advance(f"{flavor}: restart overhead")
                res["restart_overhead_ms"] = loop.run_until_complete(restart_overhead(samples))
                res["restarts_per_s"] = {}
                for n in sizes:
                    bar.advance(f"{flavor}: restart storm, {n} children")
                    res["restarts_per_s"].update(
                        loop.run_until_complete(restarts_per_second([n], storm_s)))
                bar.advance(f"{flavor}: idle CPU, 1000 children")
                res["idle_cpu"] = loop.run_until_complete(idle_cpu(1000, idle_s))
            finally:
                loop.close()
            out[RAW][flavor] = {"crash_to_event_ms": res["crash_to_event_ms"].pop(RAW),
                                "restart_overhead_ms": res["restart_overhead_ms"].pop(RAW)}
            out["per_loop"][flavor] = res
            _gate_ratios(out, flavor, res)
    return out


def _gate_ratios(out: dict[str, Any], flavor: str, res: dict[str, Any]) -> None:
    c, o = res["crash_to_event_ms"], res["restart_overhead_ms"]
    add_ratio(out, f"{flavor}:restart_overhead_p95", o["supervisor"]["p95"],
              o["baseline_loop"]["p95"], klass="restart_reload_p95", unit="ms")
    add_ratio(out, f"{flavor}:crash_to_event_p95", c["supervisor"]["p95"],
              c["baseline_except"]["p95"], klass="restart_reload_p95", unit="ms")
    for n, s in res["restarts_per_s"].items():
        add_ratio(out, f"{flavor}:restarts_per_s_{n}", s["supervisor"], s["baseline_loop"],
                  klass="throughput", unit="restarts/s")


def plot(results: dict[str, Any], path: Path) -> Path:
    """Restarts/s vs children and the crash/restart latency distributions, into ``path``."""
    rate: dict[str, tuple[list[float], list[float]]] = {}
    overhead: dict[str, list[float]] = {}
    crash: dict[str, list[float]] = {}
    for flavor, res in results["per_loop"].items():
        sizes = sorted(res["restarts_per_s"], key=int)
        for who, label in (("supervisor", "Supervisor"), ("baseline_loop", "hand-written loop")):
            rate[f"{flavor} {label}"] = ([int(n) for n in sizes],
                                         [res["restarts_per_s"][n][who] for n in sizes])
        raw = results[RAW][flavor]
        overhead[f"{flavor}\nSupervisor"] = raw["restart_overhead_ms"]["supervisor"]
        overhead[f"{flavor}\nloop"] = raw["restart_overhead_ms"]["baseline_loop"]
        crash[f"{flavor}\nServiceCrashed"] = raw["crash_to_event_ms"]["supervisor"]
        crash[f"{flavor}\nraise->except"] = raw["crash_to_event_ms"]["baseline_except"]
    panels = [
        Panel("Sustained restarts/s vs children (all crash, backoff 0)", "children",
              "restarts / s", lines=rate, logx=True, logy=True),
        Panel(f"Restart overhead beyond the {BACKOFF * 1e3:g} ms backoff", "loop, restarter",
              "ms (raise -> next start - backoff)", distributions=overhead, logy=True),
        Panel("Crash -> event in a subscriber's hands", "loop, path", "ms (log scale)",
              distributions=crash, logy=True),
    ]
    return save_plot(path, "ron-kernel supervisor vs a hand-written restart loop (same run)",
                     panels)


def report(results: dict[str, Any]) -> str:
    """Plain-text summary with the targets next to the figures."""
    lines = []
    for flavor, r in results["per_loop"].items():
        c, o = r["crash_to_event_ms"], r["restart_overhead_ms"]
        lines.append(f"[{flavor}]")
        lines.append(
            f"  crash -> ServiceCrashed ms  p50 {c['supervisor']['p50']:.3f}  "
            f"p95 {c['supervisor']['p95']:.3f}  p99 {c['supervisor']['p99']:.3f}  "
            f"(target p99 <= 5; baseline raise->except p99 {c['baseline_except']['p99']:.4f})")
        lines.append(
            f"  restart overhead beyond {o['backoff_ms']:.0f} ms backoff, ms  "
            f"p50 {o['supervisor']['p50']:.3f}  p95 {o['supervisor']['p95']:.3f}  "
            f"p99 {o['supervisor']['p99']:.3f}  (target p95 <= 2; baseline loop "
            f"p50 {o['baseline_loop']['p50']:.3f} p95 {o['baseline_loop']['p95']:.3f} "
            f"p99 {o['baseline_loop']['p99']:.3f})")
        for n, s in r["restarts_per_s"].items():
            lines.append(f"  restarts/s with {n:>4} children: supervisor {s['supervisor']:>8}  "
                         f"baseline {s['baseline_loop']:>8}  ratio {s['ratio']}")
        i = r["idle_cpu"]
        lines.append(f"  idle CPU, {i['children']} healthy children: supervisor "
                     f"{i['supervisor_pct']:.2f}% of a core (target < 5%), bare tasks "
                     f"{i['baseline_pct']:.2f}%")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The rig's command line."""
    return base_parser("Supervisor restart storm: crash latency, restart overhead, throughput.")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: run, print the summary, optionally write JSON and a plot."""
    return rig_main(RIG, parser(), run, report, plot, argv)


if __name__ == "__main__":
    main()
