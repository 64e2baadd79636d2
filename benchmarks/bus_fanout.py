"""Bus fan-out benchmark: ``python -m benchmarks.bus_fanout [--quick] [--json FILE]``.

One publisher, {1, 2, 4, 8, 16} receivers, payloads of {32, 128, 512} bytes, on asyncio and
uvloop. Every figure is printed next to a same-run baseline: the common Python idiom of one
bounded ``asyncio.Queue`` per subscriber (``put_nowait`` to each, subscribers ``await q.get()``).

Three measurements:

* **throughput** — messages published per second, *fully delivered*: the publisher sends bursts
  no larger than the capacity and yields after each, every receiver must end up with every
  message and zero lag (``delivered_all``). Bus receivers use ``recv_many`` (the batch path) or
  per-message ``await recv()``.
* **latency** — publish→deliver p50/p95/p99 at a paced rate (default 50k messages/s); each
  message carries its ``time.perf_counter_ns()`` publish stamp.
* **publish cost** — ns per ``publish`` with N idle (subscribed, never waiting) receivers, which
  must not grow with N.

``run(args)`` returns a plain dict of numbers (easy to plot); ``main()`` prints tables, and
``--plot FILE.png`` draws throughput vs receivers, the latency distributions and publish cost.
The ratios the regression gate compares are in ``results["ratios"]`` (kernel / Queue idiom).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from pathlib import Path
from typing import Any

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
from benchmarks._report import Panel, progress, rig_main, save_plot, target_lines
from ron_kernel import Bus
from ron_kernel.bus import Receiver
from ron_kernel.errors import Closed, Lagged

RIG = "bus_fanout"
RECEIVERS = (1, 2, 4, 8, 16)
PAYLOADS = (32, 128, 512)
MODES = ("recv_many", "recv", "queue")
_POOL = 1024  # distinct payload objects cycled through, so messages are not all one object

# What issue 2 asks for (reported, never asserted).
TARGETS = {
    "throughput_recv_many_8x128_events_per_s": 1.5e6,
    "throughput_recv_many_vs_queue": 10.0,
    "throughput_recv_vs_queue": 2.5,
    "latency_asyncio_p99_us": 150.0,
    "latency_uvloop_p50_us": 20.0,
    "latency_uvloop_p95_us": 50.0,
    "latency_uvloop_p99_us": 100.0,
}


def _payloads(size: int) -> list[bytes]:
    return [i.to_bytes(4, "little") * (size // 4) for i in range(_POOL)]


# ------------------------------------------------------------------------------ throughput


async def _throughput_case(mode: str, receivers: int, size: int, messages: int, capacity: int,
                           burst: int) -> dict[str, Any]:
    pool = _payloads(size)
    mask = _POOL - 1
    counts = [0] * receivers
    lag = [0]
    burst = min(burst, capacity)

    if mode == "queue":
        queues: list[asyncio.Queue[bytes | None]] = [
            asyncio.Queue(maxsize=capacity) for _ in range(receivers)]
        dropped = 0

        async def q_reader(i: int, q: asyncio.Queue[bytes | None]) -> None:
            got = 0
            get = q.get
            while (await get()) is not None:
                got += 1
            counts[i] = got

        tasks = [asyncio.create_task(q_reader(i, q)) for i, q in enumerate(queues)]
        await asyncio.sleep(0)
        puts = [q.put_nowait for q in queues]
        t0 = time.perf_counter_ns()
        sent = 0
        while sent < messages:
            end = min(messages, sent + burst)
            for j in range(sent, end):
                msg = pool[j & mask]
                for put in puts:
                    try:
                        put(msg)
                    except asyncio.QueueFull:
                        dropped += 1
            sent = end
            await asyncio.sleep(0)
        for q in queues:
            await q.put(None)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter_ns() - t0
        lag[0] = dropped
    else:
        bus: Bus[bytes] = Bus(capacity)
        rxs = [bus.subscribe() for _ in range(receivers)]

        async def many_reader(i: int, rx: Receiver[bytes]) -> None:
            got = 0
            recv_many = rx.recv_many
            while True:
                try:
                    got += len(await recv_many())
                except Lagged as exc:
                    lag[0] += exc.missed
                except Closed:
                    counts[i] = got
                    return

        async def one_reader(i: int, rx: Receiver[bytes]) -> None:
            got = 0
            recv = rx.recv
            while True:
                try:
                    await recv()
                    got += 1
                except Lagged as exc:
                    lag[0] += exc.missed
                except Closed:
                    counts[i] = got
                    return

        reader = many_reader if mode == "recv_many" else one_reader
        tasks = [asyncio.create_task(reader(i, rx)) for i, rx in enumerate(rxs)]
        await asyncio.sleep(0)
        publish = bus.publish
        t0 = time.perf_counter_ns()
        sent = 0
        while sent < messages:
            end = min(messages, sent + burst)
            for j in range(sent, end):
                publish(pool[j & mask])
            sent = end
            await asyncio.sleep(0)
        bus.close()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter_ns() - t0
    seconds = elapsed / 1e9
    return {
        "mode": mode, "receivers": receivers, "payload": size, "messages": messages,
        "seconds": seconds,
        "events_per_s": messages / seconds,
        "deliveries_per_s": messages * receivers / seconds,
        "delivered_all": all(c == messages for c in counts) and lag[0] == 0,
        "lag": lag[0],
    }


def _messages_for(receivers: int, quick: bool, mode: str = "queue") -> int:
    # keep each case's work (deliveries) roughly constant so 16 receivers don't dominate
    budget = 300_000 if quick else 1_600_000
    if quick and mode == "recv_many":
        # ~5 M msg/s: 37.5k messages were a 7 ms case, at the mercy of one timer tick or GC
        # pass (runs of one ratio ranged 16..21); 8x makes it ~60 ms, like the other cases
        budget *= 8
    return max(20_000, budget // receivers)


# ------------------------------------------------------------------------------ latency


async def _latency_case(kind: str, receivers: int, size: int, rate: float,
                        duration: float) -> dict[str, Any]:
    payload = bytes(size)
    samples: list[int] = []
    record = samples.append
    clock = time.perf_counter_ns
    lag = [0]
    total = max(1, int(rate * duration))
    interval = 1e9 / rate

    if kind == "queue":
        queues: list[asyncio.Queue[tuple[int, bytes] | None]] = [
            asyncio.Queue(maxsize=4096) for _ in range(receivers)]

        async def q_reader(q: asyncio.Queue[tuple[int, bytes] | None]) -> None:
            get = q.get
            while (msg := await get()) is not None:
                record(clock() - msg[0])

        tasks = [asyncio.create_task(q_reader(q)) for q in queues]
        puts = [q.put_nowait for q in queues]

        def send(msg: tuple[int, bytes]) -> None:
            for put in puts:
                try:
                    put(msg)
                except asyncio.QueueFull:
                    lag[0] += 1

        async def finish() -> None:
            for q in queues:
                await q.put(None)
    else:
        bus: Bus[tuple[int, bytes]] = Bus(4096)
        rxs = [bus.subscribe() for _ in range(receivers)]

        async def reader(rx: Receiver[tuple[int, bytes]]) -> None:
            recv = rx.recv
            while True:
                try:
                    msg = await recv()
                except Lagged as exc:
                    lag[0] += exc.missed
                    continue
                except Closed:
                    return
                record(clock() - msg[0])

        tasks = [asyncio.create_task(reader(rx)) for rx in rxs]
        publish = bus.publish

        def send(msg: tuple[int, bytes]) -> None:
            publish(msg)

        async def finish() -> None:
            bus.close()

    await asyncio.sleep(0)
    start = clock()
    sent = 0
    while sent < total:
        due = min(total, int((clock() - start) / interval) + 1)
        while sent < due:
            send((clock(), payload))
            sent += 1
        await asyncio.sleep(0)  # a paced producer: spin, yielding to the receivers
    await finish()
    await asyncio.gather(*tasks)
    micros = [s / 1000 for s in samples]
    pct = percentiles(micros)
    return {
        "kind": kind, "receivers": receivers, "payload": size, "rate": rate,
        "messages": total, "samples": len(samples), "lag": lag[0],
        "p50_us": pct["p50"], "p95_us": pct["p95"], "p99_us": pct["p99"],
        "mean_us": pct["mean"], "max_us": pct["max"], RAW: thin(micros),
    }


# ------------------------------------------------------------------------------ publish cost


def _publish_cost(receivers: int, n: int, rounds: int) -> dict[str, Any]:
    """ns per publish (bus) and per fan-out put_nowait (queue idiom) with idle receivers."""
    bus: Bus[bytes] = Bus(4096)
    rxs = [bus.subscribe() for _ in range(receivers)]
    msg = bytes(128)
    publish = bus.publish
    best_bus = math.inf
    queues: list[asyncio.Queue[bytes]] = [asyncio.Queue(maxsize=n) for _ in range(receivers)]
    puts = [q.put_nowait for q in queues]
    best_queue = math.inf
    # bus and idiom rounds interleaved, so a burst of load spoils one round of each, not all
    # rounds of one side; the best round of each counts (load only ever slows a round)
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            publish(msg)
        best_bus = min(best_bus, (time.perf_counter_ns() - t0) / n)
        for q in queues:
            while not q.empty():
                q.get_nowait()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            for put in puts:
                put(msg)
        best_queue = min(best_queue, (time.perf_counter_ns() - t0) / n)
    assert len(rxs) == bus.receiver_count  # keep the receivers alive (idle) until here
    return {"receivers": receivers, "bus_ns": best_bus, "queue_ns": best_queue}


# ------------------------------------------------------------------------------ driver


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement selected by ``args``; return a plain dict of numbers."""
    quick: bool = args.quick
    flavors = loops_of(args)
    receivers = (1, 8) if quick else RECEIVERS
    payloads = (128,) if quick else PAYLOADS
    # quick (the gate's) throughput cases are tens of milliseconds each: best of 3 rounds, since
    # background load only ever slows a round (one round gave runs 13.8..33.3 of one ratio)
    rounds = 3 if quick else args.rounds
    lat_receivers = (8,) if quick else (1, 8)
    duration = min(0.5, args.duration) if quick else args.duration
    results: dict[str, Any] = {
        "config": {"quick": quick, "loops": flavors, "capacity": args.capacity,
                   "burst": args.burst, "rate": args.rate, "latency_seconds": duration,
                   "rounds": rounds},
        "throughput": [], "latency": [], "publish_cost": [], "targets": {},
        RAW: {"latency_us": {}},
    }
    cost_rx = (0, 1, 8, 16)
    steps = len(flavors) * (len(receivers) * len(payloads) * len(MODES)
                            + len(lat_receivers) * 2) + len(cost_rx)
    with progress(steps, "bus fan-out", enabled=show_progress(args)) as bar:
        for flavor in flavors:
            for n_rx in receivers:
                for size in payloads:
                    for mode in MODES:
                        bar.advance(f"throughput {flavor} {mode} 1->{n_rx} {size} B")
                        best: dict[str, Any] | None = None
                        for _ in range(rounds):
                            case = run_on_loop(flavor, _throughput_case(
                                mode, n_rx, size, args.messages or _messages_for(n_rx, quick, mode),
                                args.capacity, args.burst))
                            if best is None or case["events_per_s"] > best["events_per_s"]:
                                best = case
                        assert best is not None
                        best["loop"] = flavor
                        results["throughput"].append(best)
            for n_rx in lat_receivers:
                for kind in ("bus", "queue"):
                    bar.advance(f"latency {flavor} {kind} 1->{n_rx}")
                    case = run_on_loop(flavor, _latency_case(kind, n_rx, 128, args.rate, duration))
                    case["loop"] = flavor
                    results[RAW]["latency_us"][f"{flavor}\n{kind} 1->{n_rx}"] = case.pop(RAW)
                    results["latency"].append(case)
        cost_n = args.messages or (100_000 if quick else 300_000)
        for n_rx in cost_rx:
            bar.advance(f"publish cost, {n_rx} idle receivers")
            results["publish_cost"].append(_publish_cost(n_rx, cost_n, 7))
    results["vs_queue"] = _vs_queue(results)
    _gate_ratios(results)
    results["targets"] = _targets(results)
    return results


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _gate_ratios(results: dict[str, Any]) -> None:
    """The ratios the regression gate compares: cases that the quick and the full run share."""
    for loop in results["config"]["loops"]:
        queue8 = _find(results["throughput"], loop=loop, mode="queue", receivers=8, payload=128)
        for mode in ("recv_many", "recv"):
            row = _find(results["throughput"], loop=loop, mode=mode, receivers=8, payload=128)
            if row and queue8:
                add_ratio(results, f"{loop}:throughput_{mode}_8rx", row["events_per_s"],
                          queue8["events_per_s"], klass="throughput", unit="msg/s")
        bus = _find(results["latency"], loop=loop, kind="bus", receivers=8)
        queue = _find(results["latency"], loop=loop, kind="queue", receivers=8)
        if bus and queue:
            add_ratio(results, f"{loop}:latency_8rx_p95", bus["p95_us"], queue["p95_us"],
                      klass="latency_p95", unit="µs")
            add_ratio(results, f"{loop}:latency_8rx_p99", bus["p99_us"], queue["p99_us"],
                      klass="latency_p99", unit="µs")
    cost = {row["receivers"]: row for row in results["publish_cost"]}
    if 8 in cost:
        # a publish rate: kernel rate / idiom rate = idiom ns / kernel ns
        add_ratio(results, "publish_rate_8_idle", 1e9 / cost[8]["bus_ns"],
                  1e9 / cost[8]["queue_ns"], klass="throughput", unit="publish/s")


def plot(results: dict[str, Any], path: Path) -> Path:
    """Throughput vs receivers, latency distributions and publish cost, into ``path``."""
    tput: dict[str, tuple[list[float], list[float]]] = {}
    for loop in results["config"]["loops"]:
        for mode in MODES:
            rows = sorted((r for r in results["throughput"] if r["loop"] == loop
                           and r["mode"] == mode and r["payload"] == 128),
                          key=lambda r: r["receivers"])
            label = f"{loop} {'Queue idiom' if mode == 'queue' else mode}"
            tput[label] = ([r["receivers"] for r in rows],
                           [r["events_per_s"] / 1e6 for r in rows])
    cost = results["publish_cost"]
    rx = [float(r["receivers"]) for r in cost]
    panels = [
        Panel("Throughput vs receivers (128 B, fully delivered)", "receivers",
              "messages published / s (millions)", lines=tput, logx=True, logy=True),
        Panel(f"Publish -> deliver latency at {results['config']['rate']:,.0f} msg/s, 128 B",
              "loop, kind, fan-out", "latency (µs)",
              distributions=results[RAW]["latency_us"], logy=True),
        Panel("Publish cost with idle receivers", "idle receivers", "ns per publish",
              lines={"bus.publish": (rx, [r["bus_ns"] for r in cost]),
                     "put_nowait to each Queue": (rx, [r["queue_ns"] for r in cost])}),
    ]
    return save_plot(path, "ron-kernel bus fan-out vs the asyncio.Queue idiom (same run)",
                     panels)


def _vs_queue(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in results["throughput"]:
        if row["mode"] == "queue":
            continue
        base = _find(results["throughput"], mode="queue", loop=row["loop"],
                     receivers=row["receivers"], payload=row["payload"])
        if base is not None:
            out.append({"loop": row["loop"], "mode": row["mode"], "receivers": row["receivers"],
                        "payload": row["payload"],
                        "vs_queue": row["events_per_s"] / base["events_per_s"]})
    return out


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for loop in results["config"]["loops"]:
        many = _find(results["throughput"], loop=loop, mode="recv_many", receivers=8, payload=128)
        one = _find(results["throughput"], loop=loop, mode="recv", receivers=8, payload=128)
        queue = _find(results["throughput"], loop=loop, mode="queue", receivers=8, payload=128)
        lat = _find(results["latency"], loop=loop, kind="bus", receivers=8)
        got: dict[str, float] = {}
        if many and queue and one:
            got["throughput_recv_many_8x128_events_per_s"] = many["events_per_s"]
            got["throughput_recv_many_vs_queue"] = many["events_per_s"] / queue["events_per_s"]
            got["throughput_recv_vs_queue"] = one["events_per_s"] / queue["events_per_s"]
        if lat:
            if loop == "asyncio":
                got["latency_asyncio_p99_us"] = lat["p99_us"]
            else:
                got["latency_uvloop_p50_us"] = lat["p50_us"]
                got["latency_uvloop_p95_us"] = lat["p95_us"]
                got["latency_uvloop_p99_us"] = lat["p99_us"]
        for key, value in got.items():
            goal = TARGETS[key]
            met = value <= goal if key.startswith("latency") else value >= goal
            out[f"{loop}:{key}"] = {"value": value, "target": goal, "met": met}
    cost = {row["receivers"]: row["bus_ns"] for row in results["publish_cost"]}
    if 1 in cost and 8 in cost:
        # "no more than": allow 5 % timer noise between two identical code paths
        out["publish_8_idle_vs_1_ns"] = {"value": cost[8] / cost[1], "target": 1.05,
                                         "met": cost[8] <= cost[1] * 1.05}
    return out


def report(results: dict[str, Any]) -> str:
    """Render ``results`` as readable tables."""
    lines = ["", "Throughput (messages/s published, fully delivered to every receiver)",
             f"{'loop':<8}{'rx':>4}{'bytes':>7}{'recv_many':>12}{'recv':>12}{'queue':>12}"
             f"{'many/q':>8}{'recv/q':>8}  all delivered, lag 0"]
    seen: set[tuple[str, int, int]] = set()
    for row in results["throughput"]:
        key = (row["loop"], row["receivers"], row["payload"])
        if key in seen:
            continue
        seen.add(key)
        cells = {m: _find(results["throughput"], loop=key[0], receivers=key[1], payload=key[2],
                          mode=m) for m in MODES}
        if not all(cells.values()):
            continue
        many, one, queue = (cells[m] for m in MODES)
        assert many and one and queue
        ok = all(c["delivered_all"] for c in (many, one, queue))
        lines.append(
            f"{key[0]:<8}{key[1]:>4}{key[2]:>7}{many['events_per_s'] / 1e6:>11.2f}M"
            f"{one['events_per_s'] / 1e6:>11.2f}M{queue['events_per_s'] / 1e6:>11.2f}M"
            f"{many['events_per_s'] / queue['events_per_s']:>7.1f}x"
            f"{one['events_per_s'] / queue['events_per_s']:>7.1f}x  {'yes' if ok else 'NO'}")
    lines += ["", f"Latency publish->deliver at {results['config']['rate']:.0f} msg/s, 128 B (µs)",
              f"{'loop':<8}{'kind':<7}{'rx':>4}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>10}"
              f"{'samples':>10}{'lag':>6}"]
    for row in results["latency"]:
        lines.append(f"{row['loop']:<8}{row['kind']:<7}{row['receivers']:>4}{row['p50_us']:>9.1f}"
                     f"{row['p95_us']:>9.1f}{row['p99_us']:>9.1f}{row['max_us']:>10.1f}"
                     f"{row['samples']:>10}{row['lag']:>6}")
    lines += ["", "Publish cost with idle receivers (ns per publish; queue = put_nowait to each)",
              f"{'rx':>4}{'bus':>10}{'queue':>10}"]
    for row in results["publish_cost"]:
        lines.append(f"{row['receivers']:>4}{row['bus_ns']:>10.1f}{row['queue_ns']:>10.1f}")
    lines += target_lines("issue 2", results["targets"])
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The rig's command-line flags."""
    p = base_parser("Bus fan-out: throughput, latency and publish cost vs the asyncio.Queue idiom")
    p.add_argument("--capacity", type=int, default=4096, help="bus capacity / queue maxsize")
    p.add_argument("--burst", type=int, default=1024,
                   help="messages per publisher burst before it yields (<= capacity)")
    p.add_argument("--rate", type=float, default=50_000.0, help="paced rate for latency, msg/s")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per latency case")
    p.add_argument("--rounds", type=int, default=2, help="best of N per throughput case")
    p.add_argument("--messages", type=int, default=0,
                   help="messages per throughput case (default: scaled by receiver count)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: run, print the tables, optionally write JSON and a plot."""
    return rig_main(RIG, parser(), run, report, plot, argv)


if __name__ == "__main__":
    main()
