"""Loop-health rig: what the lag sampler and the watchdog cost, and how fast a block is reported.

Run ``python benchmarks/loop_health.py [--quick] [--json FILE] [--loops asyncio,uvloop]``.
Every figure is printed next to a baseline measured in the same run (issue 13):

* **idle cost** — process CPU time (every thread) of a kernel with one idle child, with loop
  health on vs the same kernel built with ``Kernel(..., loop_health=False)``; on/off rounds are
  interleaved. Target: at most 0.5 % of a core more.
* **bus throughput** — 1 publisher → 8 ``recv_many`` receivers, 128-byte payloads, fully
  delivered, in the loop of a running kernel whose loop health is started and stopped between
  rounds (ABBA order, so the baseline is the same kernel, loop and heap with both off).
  Target: on/off within 3 % (median of the pair ratios).
* **detection** — a supervised child blocks the loop with ``time.sleep(0.5)``; measured from
  just before the call to the moment the ``loop_blocked`` line is written (threshold 100 ms),
  once from an idle loop (50 blocks) and once from a loop kept busy by short steps (20).
  Target: p95 within 2x the threshold. Baseline (asyncio only): asyncio's debug mode, whose
  slow-callback warning can only come after the block ends.

Not a test: nothing is asserted; the targets table says met or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from ron_kernel import Bus, Config
from ron_kernel._logging import configure_logging
from ron_kernel.errors import Closed, Lagged
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ChildContext

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

THRESHOLD = 0.1
BLOCK = 0.5
QUIET = Config.from_mapping({"log": {"level": "warn"}})  # the rig's own output stays readable


def _loop_factory(flavor: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if flavor == "uvloop":
        if uvloop is None:
            raise SystemExit("uvloop is not installed")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def _run(flavor: str, coro: Any) -> Any:
    with asyncio.Runner(loop_factory=_loop_factory(flavor)) as runner:
        return runner.run(coro)


def _kernel(on: bool, config: Config = QUIET) -> Kernel:
    return Kernel(config, env={}, watch_config=False, handle_sighup=False, loop_health=on)


async def _idle_child(ctx: ChildContext) -> None:
    ctx.ready()
    await ctx.shutdown.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


# ----------------------------------------------------------------------------- idle cost


async def _idle_once(on: bool, seconds: float) -> dict[str, float]:
    proc = psutil.Process()
    async with _kernel(on) as k:
        k.supervise("idle", _idle_child)
        await asyncio.sleep(0.3)  # settle: start-up work is not idle cost
        thread = next((t for t in threading.enumerate()
                       if t.name == "ron-kernel-loop-watchdog"), None)

        def thread_cpu() -> float:
            if thread is None or thread.native_id is None:
                return 0.0
            try:  # Linux: nanoseconds on CPU (psutil's per-thread times tick in 10 ms)
                with open(f"/proc/self/task/{thread.native_id}/schedstat") as fh:
                    return int(fh.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                for t in proc.threads():
                    if t.id == thread.native_id:
                        return float(t.user_time + t.system_time)
            return 0.0

        cpu0, wall0, th0 = time.process_time(), time.perf_counter(), thread_cpu()
        await asyncio.sleep(seconds)
        cpu1, wall1, th1 = time.process_time(), time.perf_counter(), thread_cpu()
    wall = wall1 - wall0
    return {"cpu_pct": 100 * (cpu1 - cpu0) / wall, "thread_pct": 100 * (th1 - th0) / wall}


def idle_cost(flavor: str, seconds: float, rounds: int) -> dict[str, Any]:
    """CPU % of a core of an idle kernel, loop health on vs off, ``rounds`` interleaved pairs."""
    on: list[dict[str, float]] = []
    off: list[dict[str, float]] = []
    for i in range(rounds):
        order = (True, False) if i % 2 == 0 else (False, True)
        for state in order:
            (on if state else off).append(_run(flavor, _idle_once(state, seconds)))
    on_pct = statistics.median(r["cpu_pct"] for r in on)
    off_pct = statistics.median(r["cpu_pct"] for r in off)
    return {"loop": flavor, "seconds": seconds, "rounds": rounds,
            "off_cpu_pct": off_pct, "on_cpu_pct": on_pct, "cost_pct": on_pct - off_pct,
            "watchdog_thread_pct": statistics.median(r["thread_pct"] for r in on),
            "on_runs": [r["cpu_pct"] for r in on], "off_runs": [r["cpu_pct"] for r in off]}


# ----------------------------------------------------------------------------- throughput


async def _fanout(messages: int, receivers: int = 8, size: int = 128,
                  burst: int = 1024) -> float:
    """Messages/s published 1 -> ``receivers`` with recv_many readers, fully delivered."""
    pool = [bytes([i]) * size for i in range(256)]
    bus: Bus[bytes] = Bus(4096)
    rxs = [bus.subscribe() for _ in range(receivers)]
    counts = [0] * receivers
    lagged = [0]

    async def reader(i: int) -> None:
        got, recv_many = 0, rxs[i].recv_many
        while True:
            try:
                got += len(await recv_many())
            except Lagged as exc:
                lagged[0] += exc.missed
            except Closed:
                counts[i] = got
                return

    tasks = [asyncio.create_task(reader(i)) for i in range(receivers)]
    await asyncio.sleep(0)
    publish = bus.publish
    t0 = time.perf_counter()
    sent = 0
    while sent < messages:
        end = min(messages, sent + burst)
        for j in range(sent, end):
            publish(pool[j & 255])
        sent = end
        await asyncio.sleep(0)
    bus.close()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    if lagged[0] or any(c != messages for c in counts):
        raise RuntimeError(f"not fully delivered: lag {lagged[0]}, counts {counts}")
    return messages / elapsed


async def _throughput_pairs(messages: int, pairs: int) -> tuple[list[float], list[float]]:
    """One kernel; loop health stopped and started between rounds (ABBA order)."""
    on: list[float] = []
    off: list[float] = []
    async with _kernel(True) as k:
        health = k._loop_health
        assert health is not None
        k.supervise("idle", _idle_child)
        await asyncio.sleep(0.05)
        await _fanout(messages // 5)  # warm-up
        for i in range(pairs):
            for state in ((True, False) if i % 2 == 0 else (False, True)):
                if state:
                    health.start()
                else:
                    health.stop()
                gc.collect()
                await asyncio.sleep(0.02)  # let the watchdog settle into its rhythm
                (on if state else off).append(await _fanout(messages))
        health.start()  # as the kernel expects it at shutdown
    return on, off


def throughput(flavor: str, messages: int, pairs: int) -> dict[str, Any]:
    """Bus fan-out rate in a running kernel with loop health on vs off (the same kernel and
    loop, health stopped/started between rounds, ABBA order); median of the pair ratios."""
    on, off = _run(flavor, _throughput_pairs(messages, pairs))
    pair_ratios = sorted(a / b for a, b in zip(on, off, strict=True))
    return {"loop": flavor, "messages": messages, "pairs": pairs,
            "ratio_q1": _pct(pair_ratios, 0.25), "ratio_q3": _pct(pair_ratios, 0.75),
            "on_median": statistics.median(on), "off_median": statistics.median(off),
            "on_best": max(on), "off_best": max(off),
            "ratio_median_of_pairs": statistics.median(pair_ratios),
            "ratio_best": max(on) / max(off), "on_runs": on, "off_runs": off}


# ----------------------------------------------------------------------------- detection


class _Recorder:
    """A log stream that notes when each loop_blocked / loop_unblocked line is written."""

    def __init__(self) -> None:
        self.blocked: list[float] = []
        self.unblocked: list[tuple[float, float]] = []  # (written at, duration_ms)
        self.stacks: list[list[str]] = []

    def write(self, text: str) -> int:
        now = time.monotonic()
        if '"event":"loop_blocked"' in text:
            self.blocked.append(now)
            self.stacks.append(json.loads(text)["stack"])
        elif '"event":"loop_unblocked"' in text:
            self.unblocked.append((now, json.loads(text)["duration_ms"]))
        return len(text)

    def flush(self) -> None:
        """Nothing buffered."""


async def _busy_work(stop: asyncio.Event) -> None:
    """Keep the loop busy with short steps (~0.1 ms each), like a loaded service."""
    while not stop.is_set():
        sum(range(3000))
        await asyncio.sleep(0)


async def _detect_once(flavor: str, blocks: int, on: bool, debug_mode: bool,
                       busy: bool = False) -> dict[str, Any]:
    go = asyncio.Event()
    starts: list[float] = []
    actual: list[float] = []
    done = asyncio.Event()

    async def blocker(ctx: ChildContext) -> None:
        ctx.ready()
        while True:
            await go.wait()
            go.clear()
            start = time.monotonic()
            starts.append(start)
            time.sleep(BLOCK)  # noqa: ASYNC251 - the induced block
            actual.append(time.monotonic() - start)
            done.set()

    warnings: list[float] = []

    class _Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "took" in record.getMessage():
                warnings.append(time.monotonic())

    loop = asyncio.get_running_loop()
    handler = _Slow()
    if debug_mode:
        loop.set_debug(True)
        loop.slow_callback_duration = THRESHOLD
        logging.getLogger("asyncio").addHandler(handler)
    recorder = _Recorder()
    config = Config.from_mapping({"observability": {"loop_block_threshold": f"{THRESHOLD}s"},
                                  "log": {"level": "warn"}})
    try:
        async with _kernel(on, config) as k:
            configure_logging(level="info", stream=recorder)  # type: ignore[arg-type]
            k.supervise("blocker", blocker, shutdown_timeout=0.01)
            await asyncio.sleep(0.1)
            stop_busy = asyncio.Event()
            busy_task = asyncio.create_task(_busy_work(stop_busy)) if busy else None
            for i in range(blocks):
                # a random phase against the watchdog, as in real life
                await asyncio.sleep(random.uniform(0.05, 0.15))
                done.clear()
                go.set()
                await done.wait()
                reports = recorder.unblocked if on else warnings
                for _ in range(400):  # up to 2 s for this block's report
                    if len(reports) > i:
                        break
                    await asyncio.sleep(0.005)
            stop_busy.set()
            if busy_task is not None:
                await busy_task
            configure_logging(level="warn")
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
        loop.set_debug(False)
    if on:
        latencies = [b - s for b, s in zip(recorder.blocked, starts, strict=False)]
        errors = [d / 1000 - a for (_, d), a in zip(recorder.unblocked, actual, strict=False)]
    else:
        latencies = [w - s for w, s in zip(warnings, starts, strict=False)]
        errors = []
    return {"loop": flavor, "blocks": blocks, "reported": len(latencies),
            "latencies_ms": [x * 1000 for x in latencies],
            "total_error_ms": [x * 1000 for x in errors],
            "stack_top": recorder.stacks[0][0] if recorder.stacks else None}


def detection(flavor: str, blocks: int, baseline_blocks: int,
              busy: bool = False) -> dict[str, Any]:
    """Block start → ``loop_blocked`` written; asyncio debug-mode warning as the baseline.

    ``busy``: the loop is kept busy by short steps while the blocks are induced (the watchdog
    looks at a busy loop less often than at an idle one).
    """
    ours = _run(flavor, _detect_once(flavor, blocks, True, False, busy))
    lat = ours["latencies_ms"]
    out: dict[str, Any] = {
        "loop": flavor, "before": "busy" if busy else "idle",
        "threshold_ms": THRESHOLD * 1000, "block_ms": BLOCK * 1000,
        "blocks": blocks, "reported": ours["reported"],
        "p50_ms": _pct(lat, 0.50), "p95_ms": _pct(lat, 0.95), "max_ms": max(lat),
        "total_error_p50_ms": _pct(ours["total_error_ms"], 0.5),
        "total_error_max_ms": max(ours["total_error_ms"]),
        "stack_top": ours["stack_top"], "latencies_ms": lat,
    }
    if flavor == "asyncio" and baseline_blocks:
        base = _run(flavor, _detect_once(flavor, baseline_blocks, False, True, busy))
        blat = base["latencies_ms"]
        out["debug_mode"] = {"blocks": baseline_blocks, "reported": base["reported"],
                             "p50_ms": _pct(blat, 0.5) if blat else None,
                             "p95_ms": _pct(blat, 0.95) if blat else None}
    return out


# ----------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> str:
    """The tables, with every figure next to its same-run baseline, then the targets."""
    m = results["machine"]
    lines = [f"Loop-health rig: {m['cpus']} CPUs, {m['platform']}, CPython {m['python']}, "
             f"uvloop {m['uvloop']}; {'quick' if results['quick'] else 'full'} run", ""]
    lines.append("Idle cost: process CPU, % of one core (median of interleaved rounds)")
    lines.append(f"{'loop':<8}{'off (baseline)':>16}{'on':>10}{'cost':>10}{'watchdog thread':>18}")
    for r in results["idle"]:
        lines.append(f"{r['loop']:<8}{r['off_cpu_pct']:>15.3f}%{r['on_cpu_pct']:>9.3f}%"
                     f"{r['cost_pct']:>+9.3f}%{r['watchdog_thread_pct']:>17.3f}%")
    lines += ["", "Bus 1 -> 8 recv_many, 128 B, in a running kernel (M msgs/s)"]
    lines.append(f"{'loop':<8}{'off med':>9}{'on med':>9}{'off best':>10}{'on best':>9}"
                 f"{'on/off (pairs)':>16}{'IQR':>14}{'on/off (best)':>15}")
    for r in results["throughput"]:
        lines.append(f"{r['loop']:<8}{r['off_median'] / 1e6:>9.3f}{r['on_median'] / 1e6:>9.3f}"
                     f"{r['off_best'] / 1e6:>10.3f}{r['on_best'] / 1e6:>9.3f}"
                     f"{r['ratio_median_of_pairs']:>16.3f}"
                     f"{r['ratio_q1']:>8.3f}-{r['ratio_q3']:.3f}{r['ratio_best']:>15.3f}")
    lines += ["", f"Detection: block start -> loop_blocked written (threshold "
                  f"{THRESHOLD * 1000:.0f} ms, blocks of {BLOCK * 1000:.0f} ms), ms"]
    lines.append(f"{'loop':<8}{'before':<6}{'blocks':>7}{'p50':>8}{'p95':>8}{'max':>8}"
                 f"{'total err p50/max':>20}   baseline: asyncio debug-mode warning p50/p95")
    for r in results["detection"]:
        base = r.get("debug_mode")
        base_text = (f"{base['p50_ms']:.0f} / {base['p95_ms']:.0f} ({base['reported']}/"
                     f"{base['blocks']} reported, after the block)"
                     if base and base["p50_ms"] is not None else "n/a")
        lines.append(f"{r['loop']:<8}{r['before']:<6}{r['reported']:>3}/{r['blocks']:<3}"
                     f"{r['p50_ms']:>8.1f}"
                     f"{r['p95_ms']:>8.1f}{r['max_ms']:>8.1f}"
                     f"{r['total_error_p50_ms']:>10.1f} /{r['total_error_max_ms']:>6.1f}   "
                     f"{base_text}")
    if results["detection"]:
        lines.append(f"stack[0] of the first report: {results['detection'][0]['stack_top']}")
    lines += ["", "Targets (issue 13)", f"{'measure':<52}{'target':>12}{'measured':>12}  verdict"]
    for name, target, value, ok in targets(results):
        lines.append(f"{name:<52}{target:>12}{value:>12}  {'met' if ok else 'MISSED'}")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(measure, target, measured, met) for every target of the issue."""
    out = []
    for r in results["idle"]:
        out.append((f"{r['loop']}: idle cost, sampler + watchdog", "<= 0.5 %",
                    f"{r['cost_pct']:+.3f} %", r["cost_pct"] <= 0.5))
    for r in results["throughput"]:
        drop = (r["ratio_median_of_pairs"] - 1) * 100
        out.append((f"{r['loop']}: bus throughput on vs off (median of pairs)", "within 3 %",
                    f"{drop:+.1f} %", abs(drop) <= 3.0))
    for r in results["detection"]:
        out.append((f"{r['loop']}, {r['before']} loop: 500 ms block reported, p95",
                    f"<= {2 * THRESHOLD * 1000:.0f} ms", f"{r['p95_ms']:.1f} ms",
                    r["p95_ms"] <= 2 * THRESHOLD * 1000 and r["reported"] == r["blocks"]))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the three measurements on every loop of ``args.loops``; return the results."""
    loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    quick = args.quick
    idle_s, idle_rounds = (2.0, 2) if quick else (10.0, 3)
    messages, tp_pairs = (200_000, 10) if quick else (400_000, 100)
    blocks, base_blocks = (10, 3) if quick else (50, 10)
    busy_blocks, busy_base = (5, 0) if quick else (20, 5)
    from importlib.metadata import version

    results: dict[str, Any] = {
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "uvloop": version("uvloop") if uvloop is not None else None,
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "idle": [], "throughput": [], "detection": [],
    }
    for flavor in loops:
        print(f"[{flavor}] idle cost ...", file=sys.stderr, flush=True)
        results["idle"].append(idle_cost(flavor, idle_s, idle_rounds))
        print(f"[{flavor}] bus throughput ...", file=sys.stderr, flush=True)
        results["throughput"].append(throughput(flavor, messages, tp_pairs))
        print(f"[{flavor}] detection ...", file=sys.stderr, flush=True)
        results["detection"].append(detection(flavor, blocks, base_blocks))
        print(f"[{flavor}] detection, busy loop ...", file=sys.stderr, flush=True)
        results["detection"].append(detection(flavor, busy_blocks, busy_base, busy=True))
    results["targets"] = [{"measure": n, "target": t, "measured": v, "met": ok}
                          for n, t, v, ok in targets(results)]
    return results


def parser() -> argparse.ArgumentParser:
    """The rig's command line."""
    p = argparse.ArgumentParser(prog="python benchmarks/loop_health.py",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="short run (~1 min instead of ~4)")
    p.add_argument("--json", metavar="FILE", help="write every number to FILE")
    p.add_argument("--loops", default="asyncio,uvloop" if uvloop is not None else "asyncio",
                   help="comma-separated loops (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the rig, print the report, write ``--json``; always 0 (a rig, not a gate)."""
    args = parser().parse_args(argv)
    # The kernels log warnings and up to stderr while the rig runs; detection captures its own.
    results = run(args)
    print(report(results))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
