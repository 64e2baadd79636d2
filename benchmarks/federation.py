"""Federation rig: ``python -m benchmarks.federation [--quick] [--json FILE] [--plot FILE.png]``.

Starts its own ``nats-server`` on a free loopback port and measures, against a same-run baseline
of nats-py publishing the same JSON bare (pre-encoded bytes, same subjects, same batches):

* **outbound cost per event** — KernelEvents published on the kernel bus until federation has
  handed every one to nats-py and the connection is flushed, per event; the baseline publishes
  the identical payloads with ``await nc.publish`` in a loop and flushes. Target: <= 1.5x.
  Compared by this process's CPU time (the machine may be shared: wall time is printed too).
* **event -> another kernel's fleet receiver** — at a paced rate (default 1,000 events/s),
  ``bus.publish`` on kernel A to ``fleet.recv()`` on kernel B (two federations in this process,
  one loop, two connections through the server); the baseline is a bare publisher and a bare
  subscriber callback. Target: p99 < 5 ms.
* **local bus throughput with federation on and NATS down** — events published and fully
  delivered to one ``recv_many`` consumer, with a federation whose server is unreachable vs no
  federation at all. Target: within 5 % (ratio >= 0.95), by CPU time, the median of paired
  rounds (wall time printed too).

Each figure is printed next to its baseline; the ratios go to ``results["ratios"]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from benchmarks._common import (
    RAW,
    add_ratio,
    base_parser,
    loops_of,
    percentiles,
    run_on_loop,
    show_progress,
)
from benchmarks._natsserver import NatsServer, free_port
from benchmarks._report import Panel, progress, rig_main, save_plot, target_lines
from ron_kernel import Bus, KernelEvent, Metrics
from ron_kernel._federation import Federation
from ron_kernel._fleet import Fleet, encode, subject_for
from ron_kernel.config import FederationConfig
from ron_kernel.errors import Closed, Lagged
from ron_kernel.logging import configure_logging

RIG = "federation"
TARGETS = {"outbound_cost_ratio": 1.5, "fleet_latency_p99_ms": 5.0, "bus_throughput_ratio": 0.95}
_BURST = 256


def _events(n: int) -> list[KernelEvent]:
    return [KernelEvent.ServiceCrashed(service=f"svc-{i % 8}", reason=f"panic: boom {i}")
            for i in range(n)]


async def _federation(url: str, node: str, prefix: str, buffer: int = 65_536,
                      capacity: int = 4096) -> tuple[Bus[KernelEvent], Fleet, Federation]:
    metrics = Metrics()
    bus: Bus[KernelEvent] = Bus(capacity, metrics=metrics)
    fleet = Fleet(own_node=node, prefix=prefix, counters=metrics.counters)
    fed = Federation(FederationConfig(nats_url=url, node=node, prefix=prefix, buffer=buffer),
                     bus=bus, fleet=fleet, counters=metrics.counters)
    await fed.start()
    return bus, fleet, fed


async def _connected(fed: Federation, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not fed.connected:
        if time.monotonic() > deadline:
            raise RuntimeError("federation did not connect to the rig's nats-server")
        await asyncio.sleep(0.01)


async def _close(nc: Client) -> None:
    """Close a bare client and let the tasks nats-py cancelled finish before the loop closes."""
    await nc.close()
    for _ in range(3):
        await asyncio.sleep(0)


async def _stop(bus: Bus[KernelEvent], fed: Federation) -> None:
    bus.close()
    await fed.stop()


# ------------------------------------------------------------------------------ outbound cost


async def _outbound(url: str, events: int, rounds: int) -> dict[str, Any]:
    """Seconds per event: through the kernel bus + federation vs bare nats-py publishes."""
    batch = _events(events)
    ours: list[float] = []
    bare: list[float] = []
    ours_wall: list[float] = []
    bare_wall: list[float] = []
    bus, _fleet, fed = await _federation(url, "rig-out", "rigout")
    nc = Client()
    await nc.connect(url, allow_reconnect=False, pending_size=1 << 20)
    try:
        await _connected(fed)
        # another prefix: the federation's own subscription (rigout.>) must not hear these
        prepared = [(subject_for("rigbare", "rig-bare", type(e).__name__),
                     encode(e, "rig-bare", i + 1, time.time())) for i, e in enumerate(batch)]
        for _ in range(rounds):  # alternate, so drift in the machine hits both alike
            start_count = fed.published
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, events, _BURST):
                for event in batch[i:i + _BURST]:
                    bus.publish(event)
                await asyncio.sleep(0)
            for _ in range(100 * events):  # until federation handed every one to nats-py
                if fed.published - start_count >= events:
                    break
                await asyncio.sleep(0)
            assert fed._nc is not None
            await fed._nc.flush()
            ours_wall.append((time.perf_counter() - t0) / events)
            ours.append((time.process_time() - c0) / events)

            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, events, _BURST):
                for subject, payload in prepared[i:i + _BURST]:
                    await nc.publish(subject, payload)
                await asyncio.sleep(0)
            await nc.flush()
            bare_wall.append((time.perf_counter() - t0) / events)
            bare.append((time.process_time() - c0) / events)
        dropped = fed.dropped
    finally:
        await _close(nc)
        await _stop(bus, fed)
    return {"events": events, "rounds": rounds, "dropped": dropped,
            "federation_us": percentiles([s * 1e6 for s in ours]),
            "bare_us": percentiles([s * 1e6 for s in bare]),
            "federation_wall_us": percentiles([s * 1e6 for s in ours_wall]),
            "bare_wall_us": percentiles([s * 1e6 for s in bare_wall]),
            RAW: {"federation_us": [s * 1e6 for s in ours], "bare_us": [s * 1e6 for s in bare]}}


# ------------------------------------------------------------------------------ fleet latency


async def _paced(rate: float, count: int, send: Any) -> None:
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(count):
        target = start + i * interval
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        send(i)


async def _latency(url: str, rate: float, count: int) -> dict[str, Any]:
    """Event on kernel A -> (node, event) on kernel B's fleet receiver, vs bare pub -> sub."""
    sent = [0.0] * count
    ours: list[float] = []
    bus_a, _fleet_a, fed_a = await _federation(url, "rig-a", "riglat")
    bus_b, fleet_b, fed_b = await _federation(url, "rig-b", "riglat")
    try:
        await _connected(fed_a)
        await _connected(fed_b)
        rx = fleet_b.subscribe()

        async def receive() -> None:
            while len(ours) < count:
                try:
                    _node, event = await rx.recv()
                except Lagged:
                    continue
                now = time.perf_counter()
                assert isinstance(event, KernelEvent.ConfigUpdated)
                ours.append((now - sent[event.version]) * 1000)

        def send(i: int) -> None:
            sent[i] = time.perf_counter()
            bus_a.publish(KernelEvent.ConfigUpdated(version=i))

        reader = asyncio.ensure_future(receive())
        await _paced(rate, count, send)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 5.0)
        reader.cancel()
        rx.close()
    finally:
        await _stop(bus_a, fed_a)
        await _stop(bus_b, fed_b)

    bare: list[float] = []
    bare_sent = [0.0] * count
    pub, sub = Client(), Client()
    await pub.connect(url, allow_reconnect=False)
    await sub.connect(url, allow_reconnect=False)
    try:
        done = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            now = time.perf_counter()
            # the same decode a fleet does, so the baseline is not just a socket round trip
            event = KernelEvent.from_json(msg.data)
            assert isinstance(event, KernelEvent.ConfigUpdated)
            bare.append((now - bare_sent[event.version]) * 1000)
            if len(bare) >= count:
                done.set()

        await sub.subscribe("rigbare.>", cb=on_msg)
        await sub.flush()
        pending: set[asyncio.Task[None]] = set()

        def send_bare(i: int) -> None:
            bare_sent[i] = time.perf_counter()
            payload = encode(KernelEvent.ConfigUpdated(version=i), "rig-a", i + 1, time.time())
            task = asyncio.ensure_future(pub.publish("rigbare.rig-a.kernel.config.updated",
                                                     payload))
            pending.add(task)
            task.add_done_callback(pending.discard)

        await _paced(rate, count, send_bare)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 5.0)
    finally:
        await _close(pub)
        await _close(sub)
    return {"rate": rate, "events": count, "received": len(ours), "bare_received": len(bare),
            "federation_ms": percentiles(ours), "bare_ms": percentiles(bare),
            RAW: {"federation_ms": ours, "bare_ms": bare}}


# ------------------------------------------------------------------------------ bus throughput


async def _throughput_once(events: list[KernelEvent], federation: bool) -> tuple[float, float]:
    """Events per second published and fully delivered to one recv_many consumer: by the
    process's CPU time (what federation costs this process) and by the wall clock."""
    metrics = Metrics()
    bus: Bus[KernelEvent] = Bus(4096, metrics=metrics)
    fed = None
    if federation:  # an unreachable server: NATS down for the whole run
        fleet = Fleet(own_node="rig-down", prefix="rigdown", counters=metrics.counters)
        fed = Federation(FederationConfig(nats_url=f"nats://127.0.0.1:{free_port()}",
                                          node="rig-down", prefix="rigdown"),
                         bus=bus, fleet=fleet, counters=metrics.counters)
        await fed.start()
        # steady state of an outage: the first refused connects are behind it (the backoff
        # between attempts has grown to a second or more)
        await asyncio.sleep(1.0)
    rx = bus.subscribe()
    got = 0

    async def consume() -> None:
        nonlocal got
        while True:
            try:
                got += len(await rx.recv_many())
            except Lagged:
                raise AssertionError("the consumer lagged: bursts are too large") from None
            except Closed:
                return

    consumer = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(events), 1024):
        for event in events[i:i + 1024]:
            bus.publish(event)
        await asyncio.sleep(0)
    bus.close()
    await consumer
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    assert got == len(events)
    if fed is not None:
        await fed.stop()
    return len(events) / cpu, len(events) / wall


async def _throughput(events: int, rounds: int) -> dict[str, Any]:
    batch = _events(events)
    on: list[float] = []
    off: list[float] = []
    on_wall: list[float] = []
    off_wall: list[float] = []
    for n in range(rounds):  # paired, and each goes first every other round (no order bias)
        for federation in (False, True) if n % 2 == 0 else (True, False):
            cpu, wall = await _throughput_once(batch, federation)
            (on if federation else off).append(cpu)
            (on_wall if federation else off_wall).append(wall)
    paired = sorted(a / b for a, b in zip(on, off, strict=True))
    paired_wall = sorted(a / b for a, b in zip(on_wall, off_wall, strict=True))
    return {"events": events, "rounds": rounds,
            "federation_off_per_s": percentiles(off), "federation_down_per_s": percentiles(on),
            "federation_off_wall_per_s": percentiles(off_wall),
            "federation_down_wall_per_s": percentiles(on_wall),
            "paired_ratio_p50": paired[len(paired) // 2],
            "paired_wall_ratio_p50": paired_wall[len(paired_wall) // 2],
            RAW: {"off": off, "on": on}}


# ------------------------------------------------------------------------------ the rig


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the three measurements on each loop flavor; a plain dict of numbers."""
    quick = bool(args.quick)
    out_events, out_rounds = (5_000, 5) if quick else (20_000, 15)
    lat_count = 1_000 if quick else args.rate * args.seconds
    tp_events, tp_rounds = (100_000, 5) if quick else (300_000, 15)
    loops = loops_of(args)
    results: dict[str, Any] = {"config": {"quick": quick, "loops": loops, "rate": args.rate,
                                          "latency_events": lat_count}, "loops": {}}
    raw: dict[str, Any] = {}
    configure_logging(level="error")  # the rig's own connection chatter is not the subject
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as server, \
            progress(3 * len(loops), "federation", enabled=show_progress(args)) as bar:
        for flavor in loops:
            bar.advance(f"{flavor}: outbound cost")
            outbound = run_on_loop(flavor, _outbound(server.url, out_events, out_rounds))
            bar.advance(f"{flavor}: event -> fleet receiver")
            latency = run_on_loop(flavor, _latency(server.url, float(args.rate), int(lat_count)))
            bar.advance(f"{flavor}: bus throughput, NATS down")
            throughput = run_on_loop(flavor, _throughput(tp_events, tp_rounds))
            raw[flavor] = {"outbound": outbound.pop(RAW), "latency": latency.pop(RAW),
                           "throughput": throughput.pop(RAW)}
            results["loops"][flavor] = {"outbound": outbound, "latency": latency,
                                        "throughput": throughput}
            o, lat, t = outbound, latency, throughput
            add_ratio(results, f"{flavor}_outbound_cost", o["federation_us"]["p50"],
                      o["bare_us"]["p50"], klass="latency_p95", unit="us/event")
            add_ratio(results, f"{flavor}_fleet_latency_p99", lat["federation_ms"]["p99"],
                      lat["bare_ms"]["p99"], klass="latency_p99", unit="ms")
            add_ratio(results, f"{flavor}_bus_throughput_nats_down",
                      t["federation_down_per_s"]["p50"], t["federation_off_per_s"]["p50"],
                      klass="throughput", unit="events/s")
    configure_logging()
    results[RAW] = raw
    return results


def report(results: dict[str, Any]) -> str:
    """The figures next to their same-run baselines, and the targets."""
    lines = ["federation (same-run baselines: bare nats-py publish / bare pub->sub / "
             "federation off)"]
    targets: dict[str, dict[str, Any]] = {}
    for flavor, r in results["loops"].items():
        o, lat, t = r["outbound"], r["latency"], r["throughput"]
        cost = o["federation_us"]["p50"] / o["bare_us"]["p50"]
        tput = t["paired_ratio_p50"]
        lines += [
            f"[{flavor}]",
            f"  outbound CPU per event  federation {o['federation_us']['p50']:7.2f} us   "
            f"bare publish {o['bare_us']['p50']:7.2f} us   ratio {cost:.2f}x "
            f"({o['events']:,} events x {o['rounds']} rounds, p50; dropped {o['dropped']})",
            f"  outbound wall per event federation {o['federation_wall_us']['p50']:7.2f} us   "
            f"bare publish {o['bare_wall_us']['p50']:7.2f} us   ratio "
            f"{o['federation_wall_us']['p50'] / o['bare_wall_us']['p50']:.2f}x",
            f"  event -> fleet receiver p50 {lat['federation_ms']['p50']:.3f} ms  "
            f"p99 {lat['federation_ms']['p99']:.3f} ms  (bare pub->sub p50 "
            f"{lat['bare_ms']['p50']:.3f} ms  p99 {lat['bare_ms']['p99']:.3f} ms) at "
            f"{lat['rate']:g}/s, {lat['received']}/{lat['events']} received",
            f"  bus throughput (CPU)    NATS down {t['federation_down_per_s']['p50']:,.0f}/s  "
            f"federation off {t['federation_off_per_s']['p50']:,.0f}/s   ratio {tput:.3f} "
            f"(median of {t['rounds']} paired rounds)",
            f"  bus throughput (wall)   NATS down "
            f"{t['federation_down_wall_per_s']['p50']:,.0f}/s  federation off "
            f"{t['federation_off_wall_per_s']['p50']:,.0f}/s   ratio "
            f"{t['paired_wall_ratio_p50']:.3f}",
        ]
        targets[f"{flavor}_outbound_cost_ratio"] = {
            "value": cost, "target": TARGETS["outbound_cost_ratio"],
            "met": cost <= TARGETS["outbound_cost_ratio"]}
        p99 = lat["federation_ms"]["p99"]
        targets[f"{flavor}_fleet_latency_p99_ms"] = {
            "value": p99, "target": TARGETS["fleet_latency_p99_ms"],
            "met": p99 < TARGETS["fleet_latency_p99_ms"]}
        targets[f"{flavor}_bus_throughput_ratio"] = {
            "value": tput, "target": TARGETS["bus_throughput_ratio"],
            "met": tput >= TARGETS["bus_throughput_ratio"]}
    lines += target_lines("issue 16", targets)
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    """Latency distributions and per-round costs, federation vs baseline, per loop."""
    raw = results[RAW]
    panels = []
    for flavor, r in raw.items():
        panels.append(Panel(f"{flavor}: event -> another kernel's fleet receiver",
                            "path", "ms (log scale)", logy=True,
                            distributions={"federation": r["latency"]["federation_ms"],
                                           "bare nats-py\npub->sub": r["latency"]["bare_ms"]}))
        panels.append(Panel(f"{flavor}: outbound cost per event", "path", "us per event",
                            distributions={"kernel bus ->\nfederation": r["outbound"]
                                           ["federation_us"],
                                           "bare nats-py\npublish": r["outbound"]["bare_us"]}))
    return save_plot(path, "ron-kernel federation over core NATS (loopback)", panels)


def parser() -> argparse.ArgumentParser:
    """The rig's command-line flags."""
    p = base_parser(__doc__.splitlines()[0] if __doc__ else "federation rig")
    p.add_argument("--rate", type=int, default=1000, help="events per second, latency (1000)")
    p.add_argument("--seconds", type=int, default=10, help="seconds of paced events (10)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: run, print the summary, optionally write JSON and a plot."""
    return rig_main(RIG, parser(), run, report, plot, argv)


if __name__ == "__main__":
    main()
