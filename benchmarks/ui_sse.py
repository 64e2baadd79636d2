"""Status-page rig: bus throughput with 5 SSE clients watching vs nobody, same run.

    python -m benchmarks.ui_sse [--quick] [--clients 5] [--phase 0.5] [--rounds 30]
                                [--paced-phase 2] [--paced-rounds 4]
                                [--loops asyncio,uvloop] [--json FILE] [--plot FILE.png]

A real :class:`~ron_kernel.kernel.Kernel` serves HTTP on loopback. A publisher task on the
kernel's loop publishes ``KernelEvent.Health`` events into the kernel bus as fast as it can, in
bursts of 64 with a yield after each (the loop also serves the HTTP streams), for ``--phase``
seconds, while the app's own consumer (one receiver, ``recv_many``) reads them: a bus with no
receiver at all takes a shortcut (count and drop) that no real kernel takes. Three cases
alternate, ``--rounds`` times, so load on the machine hits all of them:

* ``bare``: a plain ``Bus`` of the same capacity and its consumer; no kernel, no HTTP server;
* ``kernel, nobody watching``: the kernel bus and its consumer, ``/ui`` and ``/events`` served,
  no client (the page must cost nothing then: no extra receiver, no per-event work);
* ``kernel, N SSE clients``: the same plus N ``/events?format=sse`` streams, read by another
  process (as browsers would be) that counts the frames it gets.

Figures: events published per second (median of the rounds) per case; ratios ``watched / nobody``
(of the medians, and the median of the paired rounds; target: within 5 %, i.e. >= 0.95;
reported, not asserted) and
``nobody / bare`` (the cost of an unwatched page: ~1.0); what the clients received and how much
they lagged.

Throughput on a shared 2-core machine moves by +-10 % from one phase to the next, so a second,
steadier measure follows: the publisher offers a fixed rate (1,000 and 20,000 events/s, in 10 ms
ticks) and the process CPU time over the phase is compared, nobody watching vs N clients: the
extra points of a core are what the watchers cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RAW,
    add_ratio,
    base_parser,
    loops_of,
    run_on_loop,
    show_progress,
)
from benchmarks._report import Panel, progress, rig_main, save_plot, target_lines
from ron_kernel import Bus, Config, KernelEvent
from ron_kernel._kernel_http import SSE_PACE
from ron_kernel._logging import configure_logging
from ron_kernel.errors import Closed, Lagged
from ron_kernel.kernel import Kernel

RIG = "ui_sse"
BURST = 64
_POOL = 1024
TARGET_RATIO = 0.95  # watched / nobody: "within 5 %"
CASES = ("bare", "nobody", "watched")
PACED_RATES = (1_000, 20_000)
"""Offered rates of the CPU measure: a busy kernel, and a restart storm."""


def _pool() -> list[KernelEvent]:
    return [KernelEvent.Health(service=f"svc-{i:04d}", ok=bool(i & 1)) for i in range(_POOL)]


async def _consume(bus: Bus[KernelEvent], counted: list[int]) -> None:
    """The app's own consumer of the kernel bus (every case has one): reads every batch."""
    with bus.subscribe() as rx:
        while True:
            try:
                counted[0] += len(await rx.recv_many(BURST * 4))
            except Lagged:
                counted[1] += 1
            except Closed:
                return


async def _publish_for(bus: Bus[KernelEvent], seconds: float,
                       pool: list[KernelEvent]) -> float:
    """Publish in bursts for ``seconds`` while the app's consumer reads; events per second."""
    counted = [0, 0]
    consumer = asyncio.ensure_future(_consume(bus, counted))
    await asyncio.sleep(0)  # subscribed
    try:
        return await _publish_bursts(bus, seconds, pool)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def _publish_bursts(bus: Bus[KernelEvent], seconds: float,
                          pool: list[KernelEvent]) -> float:
    mask = _POOL - 1
    n = 0
    start = time.perf_counter()
    end = start + seconds
    publish = bus.publish
    while True:
        for i in range(n, n + BURST):
            publish(pool[i & mask])
        n += BURST
        await asyncio.sleep(0)
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


async def _until(check: Any, nudge: Any = None, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("the SSE streams did not start or end in time")
        if nudge is not None:
            nudge()
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------ the clients


async def _client_main(url: str, count: int) -> None:
    """The watcher process, driven by lines on stdin.

    ``open``: connect ``count`` SSE streams, print ``ready``; ``close``: disconnect them, print
    ``events N lagged M`` (frames received since ``open``); end of input: exit. It reads raw
    chunks and counts frames with ``bytes.count`` (C speed), at a lower priority: the rig
    measures what the streams cost the kernel, not what parsing costs a client sharing the
    machine's cores with it (browsers would be elsewhere).
    """
    import aiohttp

    os.nice(10)
    loop = asyncio.get_running_loop()
    counts = [0, 0]

    async def follow(http: aiohttp.ClientSession, opened: asyncio.Queue[int]) -> None:
        async with http.get(url, headers={"Accept": "text/event-stream"}) as resp:
            opened.put_nowait(resp.status)
            async for chunk in resp.content.iter_any():
                counts[0] += chunk.count(b"data: ")
                counts[1] += chunk.count(b"event: lagged")

    async with aiohttp.ClientSession() as http:
        tasks: list[asyncio.Task[None]] = []
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "open":
                counts[:] = [0, 0]
                opened: asyncio.Queue[int] = asyncio.Queue()
                tasks = [asyncio.ensure_future(follow(http, opened)) for _ in range(count)]
                for _ in range(count):
                    await asyncio.wait_for(opened.get(), 10)
                print("ready", flush=True)
            elif line == "close":
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                # (a "data: " split across two chunks is missed: a close lower bound)
                print(f"events {counts[0] - counts[1]} lagged {counts[1]}", flush=True)
            else:
                return


class _Watchers:
    """The client process: N SSE streams on ``url``, opened and closed on request."""

    def __init__(self, url: str, count: int) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ui_sse", "--client", url, str(count)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[1])

    async def _ask(self, command: str) -> str:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(command + "\n")
        self.p.stdin.flush()
        stdout = self.p.stdout
        answer = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 20)
        if not answer:
            raise RuntimeError(f"the SSE client process ended (asked {command!r})")
        return answer.strip()

    async def open(self) -> None:
        answer = await self._ask("open")
        if answer != "ready":
            raise RuntimeError(f"the SSE client process could not connect: {answer!r}")

    async def close(self) -> tuple[int, int]:
        words = (await self._ask("close")).split()
        return int(words[1]), int(words[3])

    def quit(self) -> None:
        if self.p.stdin is not None:
            self.p.stdin.close()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)


# ------------------------------------------------------------------------------ measurement


class _Run:
    """The figures of one loop flavor, collected round by round."""

    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {case: [] for case in CASES}
        self.received: list[int] = []
        self.lagged: list[int] = []
        self.published: list[int] = []
        # paced: rate -> case -> CPU % of a core per phase; delivered share when watched
        self.cpu: dict[int, dict[str, list[float]]] = {
            rate: {"nobody": [], "watched": []} for rate in PACED_RATES}
        self.paced_delivered: dict[int, list[float]] = {rate: [] for rate in PACED_RATES}


async def _paced_cpu(bus: Bus[KernelEvent], rate: int, seconds: float,
                     pool: list[KernelEvent]) -> float:
    """Publish ``rate`` events/s in 10 ms ticks while the app's consumer reads; return the
    process CPU time over the phase in % of one core."""
    counted = [0, 0]
    consumer = asyncio.ensure_future(_consume(bus, counted))
    await asyncio.sleep(0)
    mask = _POOL - 1
    per_tick = max(1, round(rate / 100))
    n = 0
    cpu = time.process_time()
    start = due = time.perf_counter()
    try:
        while True:
            for i in range(n, n + per_tick):
                bus.publish(pool[i & mask])
            n += per_tick
            due += 0.01
            now = time.perf_counter()
            if now - start >= seconds:
                return 100.0 * (time.process_time() - cpu) / (now - start)
            await asyncio.sleep(max(0.0, due - now))
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def _paced(kernel: Kernel, watchers: _Watchers, clients: int, rate: int, case: str,
                 phase: float, pool: list[KernelEvent], run: _Run) -> None:
    if case == "nobody":
        assert kernel.bus.receiver_count == 0
        run.cpu[rate]["nobody"].append(await _paced_cpu(kernel.bus, rate, phase, pool))
        return
    await watchers.open()
    await _until(lambda: kernel.bus.receiver_count >= clients)
    before = kernel.bus.stats().published
    run.cpu[rate]["watched"].append(await _paced_cpu(kernel.bus, rate, phase, pool))
    published = kernel.bus.stats().published - before
    await asyncio.sleep(2 * SSE_PACE)
    got, _ = await watchers.close()
    run.paced_delivered[rate].append(got / (published * clients) if published else 0.0)
    await _until(lambda: kernel.bus.receiver_count == 0,
                 nudge=lambda: kernel.bus.publish(pool[0]))


async def _watched(kernel: Kernel, watchers: _Watchers, clients: int, phase: float,
                   pool: list[KernelEvent], run: _Run) -> None:
    await watchers.open()
    await _until(lambda: kernel.bus.receiver_count >= clients)
    before = kernel.bus.stats().published
    run.rates["watched"].append(await _publish_for(kernel.bus, phase, pool))
    run.published.append(kernel.bus.stats().published - before)
    await asyncio.sleep(2 * SSE_PACE)  # the streams send what they hold
    got, missed = await watchers.close()
    run.received.append(got)
    run.lagged.append(missed)
    # a stream learns that its client left at its next write: give it one
    await _until(lambda: kernel.bus.receiver_count == 0,
                 nudge=lambda: kernel.bus.publish(pool[0]))


async def _measure(clients: int, phase: float, rounds: int, paced_phase: float,
                   paced_rounds: int, progress_step: Any) -> dict[str, Any]:
    config = Config.from_mapping({"observability": {"expose_http": True,
                                                    "addr": "127.0.0.1:0"}})
    kernel = Kernel(config, env={}, watch_config=False, handle_sighup=False)
    pool = _pool()
    run = _Run()
    async with kernel:
        watchers = _Watchers(kernel.urls()["events"] + "?format=sse", clients)
        try:
            bare: Bus[KernelEvent] = Bus(kernel.bus.capacity)
            await _publish_for(kernel.bus, min(0.3, phase), pool)  # warm-up
            for r in range(rounds):
                for case in CASES if r % 2 == 0 else CASES[::-1]:
                    if case == "bare":
                        run.rates[case].append(await _publish_for(bare, phase, pool))
                    elif case == "nobody":
                        assert kernel.bus.receiver_count == 0  # no stream is left behind
                        run.rates[case].append(await _publish_for(kernel.bus, phase, pool))
                    else:
                        await _watched(kernel, watchers, clients, phase, pool, run)
                progress_step(f"round {r + 1}/{rounds}")
            for r in range(paced_rounds):
                for rate in PACED_RATES:
                    for case in ("nobody", "watched") if r % 2 == 0 else ("watched", "nobody"):
                        await _paced(kernel, watchers, clients, rate, case, paced_phase, pool,
                                     run)
                progress_step(f"paced round {r + 1}/{paced_rounds}")
        finally:
            watchers.quit()
    med = {case: statistics.median(v) for case, v in run.rates.items()}
    # paired: each round's watched phase against the nobody phase next to it
    paired = [w / n for w, n in zip(run.rates["watched"], run.rates["nobody"], strict=True)]
    offered = sum(run.published) * clients
    return {
        "rates": run.rates,
        "median_events_per_s": med,
        "ratio_watched_vs_nobody": med["watched"] / med["nobody"],
        "ratio_watched_vs_nobody_paired": statistics.median(paired),
        "ratio_nobody_vs_bare": statistics.median(
            n / b for n, b in zip(run.rates["nobody"], run.rates["bare"], strict=True)),
        "received_per_client": sum(run.received) / max(1, len(run.received)) / clients,
        "lag_notices_per_client": sum(run.lagged) / max(1, len(run.lagged)) / clients,
        "delivered_share": sum(run.received) / offered if offered else float("nan"),
        "paced": {str(rate): {
            "cpu_pct_nobody": statistics.median(run.cpu[rate]["nobody"]),
            "cpu_pct_watched": statistics.median(run.cpu[rate]["watched"]),
            "cpu_pct_extra": statistics.median(
                w - n for w, n in zip(run.cpu[rate]["watched"], run.cpu[rate]["nobody"],
                                      strict=True)),
            "delivered_share": statistics.median(run.paced_delivered[rate]),
        } for rate in PACED_RATES},
    }


def parser() -> argparse.ArgumentParser:
    """The rig's command line."""
    p = base_parser(__doc__.splitlines()[0] if __doc__ else RIG)
    p.add_argument("--clients", type=int, default=5, help="SSE clients when watched (5)")
    p.add_argument("--phase", type=float, default=0.5, help="seconds per case per round (0.5)")
    p.add_argument("--rounds", type=int, default=30, help="rounds of the three cases (30)")
    p.add_argument("--paced-phase", type=float, default=2.0,
                   help="seconds per paced phase (2)")
    p.add_argument("--paced-rounds", type=int, default=4, help="paced rounds (4)")
    p.add_argument("--client", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every loop flavor; return the results as a plain dict of numbers."""
    phase, rounds = (0.3, 6) if args.quick else (args.phase, args.rounds)
    paced_phase, paced_rounds = (1.0, 2) if args.quick else (args.paced_phase,
                                                             args.paced_rounds)
    loops = loops_of(args)
    results: dict[str, Any] = {"config": {"clients": args.clients, "phase_s": phase,
                                          "rounds": rounds, "burst": BURST,
                                          "paced_phase_s": paced_phase,
                                          "paced_rounds": paced_rounds}, "loops": {}}
    with open(os.devnull, "w") as sink, \
            progress((rounds + paced_rounds) * len(loops), "ui sse",
                     enabled=show_progress(args)) as bar:
        configure_logging(format="json", level="warning", stream=sink)
        for flavor in loops:
            out = run_on_loop(flavor, _measure(args.clients, phase, rounds, paced_phase,
                                               paced_rounds, bar.advance))
            results["loops"][flavor] = out
            add_ratio(results, f"{flavor}_throughput_watched_vs_nobody",
                      out["median_events_per_s"]["watched"],
                      out["median_events_per_s"]["nobody"], klass="throughput", unit="events/s")
    results[RAW] = {flavor: r["rates"] for flavor, r in results["loops"].items()}
    return results


def report(results: dict[str, Any]) -> str:
    """Plain-text summary with the target next to the figures."""
    c = results["config"]
    lines = [f"ui_sse: bus throughput, {c['clients']} SSE clients vs nobody watching "
             f"({c['rounds']} rounds x {c['phase_s']:g} s per case, bursts of {c['burst']})"]
    targets = {}
    for flavor, r in results["loops"].items():
        m = r["median_events_per_s"]
        lines += [
            f"  {flavor}: bare Bus {m['bare']:>12,.0f} ev/s",
            f"  {flavor}: kernel, nobody watching {m['nobody']:>12,.0f} ev/s "
            f"(x{r['ratio_nobody_vs_bare']:.3f} of bare)",
            f"  {flavor}: kernel, {c['clients']} SSE clients {m['watched']:>12,.0f} ev/s "
            f"(x{r['ratio_watched_vs_nobody']:.3f} of nobody; median of the paired rounds "
            f"x{r['ratio_watched_vs_nobody_paired']:.3f})",
            f"  {flavor}: each client received {r['received_per_client']:,.0f} events per round "
            f"({100 * r['delivered_share']:.2f} % of what was published meanwhile) and "
            f"{r['lag_notices_per_client']:,.0f} lagged notices",
        ]
        for rate, paced in r["paced"].items():
            lines.append(
                f"  {flavor}: paced {int(rate):,} ev/s: process CPU {paced['cpu_pct_nobody']:.1f} "
                f"% of a core nobody watching, {paced['cpu_pct_watched']:.1f} % with "
                f"{c['clients']} SSE clients (extra {paced['cpu_pct_extra']:+.1f} points); they "
                f"received {100 * paced['delivered_share']:.1f} % of the events")
        targets[f"{flavor}_watched_vs_nobody"] = {
            "value": r["ratio_watched_vs_nobody"], "target": TARGET_RATIO,
            "met": r["ratio_watched_vs_nobody"] >= TARGET_RATIO}
    lines += target_lines("watched / nobody >= 0.95", targets)
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    """Events per second per round, per case and loop."""
    panels = [Panel(f"{flavor}: publish rate per round", "case", "events/s",
                    distributions={case: rates[case] for case in CASES})
              for flavor, rates in results[RAW].items()]
    return save_plot(path, "Bus throughput with SSE clients watching vs nobody", panels)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: run, print the summary, optionally write JSON and a plot."""
    args = parser().parse_args(argv)
    if args.client:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_client_main(args.client[0], int(args.client[1])))
        return {}
    return rig_main(RIG, parser(), run, report, plot, argv)


if __name__ == "__main__":
    main()
