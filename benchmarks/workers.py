"""Workers rig: what worker processes buy and cost, each against a same-run baseline.

    python -m benchmarks.workers [--quick] [--json FILE] [--only PART,...]

Run from the repository root (worker processes import ``benchmarks._workers_app``). Parts:

1. ``cpu``: a child doing pure-Python work units back to back, counted in
   ``rig_units_total`` and read through the parent's merged ``/metrics`` text; units/s with 2
   workers against 0 workers (the app in this process). Target: >= 1.7x on 2 cores. The load
   average is recorded with it: the machine is shared.
2. ``crash``: SIGKILL of a worker -> ``ServiceCrashed(w/0)`` on the parent's bus, p50/p95/p99,
   against the baseline: SIGKILL of a plain ``asyncio`` subprocess -> its ``wait()`` returns.
   Target: p95 < 50 ms.
3. ``events``: workers publishing Health events at a paced 50k/s each, delivered to a
   receiver on the parent's bus; per-worker delivered rate and events lost, against the same
   app in this process (0 workers). Target: >= 50k events/s per worker without loss.
4. ``scrape``: ``GET /metrics`` of the parent with 4 workers x 2k series, p50/p95, against
   the same app in this process (one set of 2k series). Target: p95 < 50 ms.
5. ``http``: the example blob store (``examples.blobstore``) on one port shared by 2 workers
   against the same app in this process (0 workers); a keep-alive client in another process
   GETs one 4 KiB blob (read and BLAKE3-verified per request); requests/s and the client's
   CPU (% of one core).
6. ``orphans``: the parent SIGKILLed; how long until both workers are gone, with Linux's
   parent-death signal and with the portable fallback (channel EOF + parent-pid watch).

Figures only: nothing is asserted; record them in docs/PERFORMANCE.md (History).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import _workers_app
from benchmarks._common import machine_info, percentiles
from examples.blobstore import APP_CONFIG as BLOBSTORE_CONFIG
from examples.blobstore.service import LISTEN_SOCKET as BLOBSTORE_SOCKET
from ron_kernel import Config, KernelEvent
from ron_kernel._appspec import load_app
from ron_kernel.errors import Closed, Lagged
from ron_kernel.kernel import Kernel
from ron_kernel.logging import configure_logging

PARTS = ("cpu", "crash", "events", "scrape", "http", "orphans")
APP = "benchmarks._workers_app"
START = 60.0


def _ms(samples: list[float]) -> dict[str, float]:
    return {k: round(v * 1e3, 3) for k, v in percentiles(samples).items()}


def _kernel(*argv: str, **knobs: Any) -> Kernel[Any]:
    base = ["--sup-min-backoff", "10ms", "--sup-max-backoff", "10ms", "--sup-restart-cap",
            "10000", "--sup-restart-window", "1s", "--log-level", "warn", *argv]
    config = Config.load(argv=base, env={}, app=_workers_app.RigKnobs)
    if knobs:
        config = Config.from_mapping({"app": knobs}, base=config)
    return Kernel(config, app_config=_workers_app.RigKnobs, env={}, argv=base,
                  watch_config=False, handle_sighup=False)


async def _until(check: Callable[[], bool], within: float = START) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the rig's kernel did not get there in time")
        await asyncio.sleep(0.02)


async def _run(workers: int, app: str, kernel: Kernel[Any],
               body: Callable[[Kernel[Any]], Awaitable[Any]]) -> Any:
    """Start ``app`` in ``workers`` processes (0: in this process), run ``body``, stop.

    ``app`` is a factory of ``benchmarks._workers_app`` or a full ``module:factory`` spec.
    """
    spec = app if ":" in app else f"{APP}:{app}"
    if workers:
        kernel.supervise_workers("w", app=spec, count=workers)
    else:
        load_app(spec)(kernel)
    await kernel.start()
    gc.collect()
    gc.freeze()  # as `ron-kernel run` does after start (the workers do it too)
    try:
        if workers:
            await _until(lambda: kernel.status()["workers"]["w"]["ready"] == workers)
        await _until(kernel.health.all_ready)
        return await body(kernel)
    finally:
        await kernel.shutdown(5.0)


def _sum_series(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


# ----------------------------------------------------------------------------- 1. cpu


async def cpu_rate(workers: int, seconds: float) -> dict[str, float]:
    """Work units per second over ``seconds`` (after a 1 s warm-up)."""

    def cpu_seconds(text: str) -> float:
        # the app's processes: this one without workers, else the workers (labelled)
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("process_cpu_seconds_total")
                   and (("worker=" in line) == bool(workers)))

    async def body(kernel: Kernel[Any]) -> dict[str, float]:
        await asyncio.sleep(1.0)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        first = (await kernel.metrics.scrape_text()).decode()
        await asyncio.sleep(seconds)
        last = (await kernel.metrics.scrape_text()).decode()
        wall = time.perf_counter() - t0
        units = _sum_series(last, "rig_units_total") - _sum_series(first, "rig_units_total")
        cpu = cpu_seconds(last) - cpu_seconds(first)
        return {"units_per_s": round(units / wall, 1), "load_avg_1m": round(load, 2),
                "cores_used": round(cpu / wall, 3),
                "units_per_cpu_s": round(units / cpu, 1) if cpu else float("nan")}

    return dict(await _run(workers, "cpu", _kernel(), body))


# ----------------------------------------------------------------------------- 2. crash


async def crash_latency(samples: int) -> dict[str, Any]:
    """SIGKILL -> ServiceCrashed on the parent bus, and the bare subprocess baseline."""
    kernel = _kernel()
    rx = kernel.bus.subscribe()

    async def body(kernel: Kernel[Any]) -> list[float]:
        out: list[float] = []
        for _ in range(samples):
            await _until(lambda: kernel.status()["workers"]["w"]["workers"]["0"]["state"]
                         == "up")
            pid = kernel.status()["workers"]["w"]["workers"]["0"]["pid"]
            rx.try_recv_many()
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                while True:
                    event = await rx.recv()
                    if isinstance(event, KernelEvent.ServiceCrashed) and event.service == "w/0":
                        break
            out.append(time.perf_counter() - t0)
        return out

    kernel_samples: list[float] = await _run(1, "ok", kernel, body)
    base: list[float] = []
    for _ in range(samples):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; print(1, flush=True); time.sleep(60)",
            stdout=subprocess.PIPE)
        assert proc.stdout is not None
        await proc.stdout.readline()
        t0 = time.perf_counter()
        proc.kill()
        await proc.wait()
        base.append(time.perf_counter() - t0)
    return {"kernel_ms": _ms(kernel_samples), "baseline_ms": _ms(base), "samples": samples}


# ----------------------------------------------------------------------------- 3. events


async def event_rate(workers: int, rate: int, seconds: float) -> dict[str, Any]:
    """Delivered events/s per source on the parent's bus, and what was lost.

    The bus holds 65,536 events here (parent and workers: one config), so the rig's own
    counting receiver does not lag behind 100k/s on a loaded machine: what is measured is the
    channel, and a lag of the counter is reported separately (``parent_receiver_lagged``).
    """
    kernel = _kernel("--bus-capacity", "65536", rate=rate)
    rx = kernel.bus.subscribe()
    counts: dict[str, int] = {}
    lagged = [0]

    async def count() -> None:
        while True:
            try:
                batch = await rx.recv_many(4096)
            except Lagged as lag:
                lagged[0] += lag.missed
                continue
            except Closed:
                return
            for event in batch:
                if isinstance(event, KernelEvent.Health):
                    source = event.service.rsplit("/", 1)[0] if workers else "self"
                    counts[source] = counts.get(source, 0) + 1

    async def body(kernel: Kernel[Any]) -> dict[str, Any]:
        counter = asyncio.get_running_loop().create_task(count())
        await asyncio.sleep(1.0)
        lost0 = kernel.metrics.counters.worker_events_lost_total.total()
        counts.clear()
        lagged[0] = 0
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - t0
        got = dict(counts)
        lost = kernel.metrics.counters.worker_events_lost_total.total() - lost0
        counter.cancel()
        return {"per_source_per_s": {k: round(v / wall, 1) for k, v in sorted(got.items())},
                "events_lost": lost, "parent_receiver_lagged": lagged[0]}

    return dict(await _run(workers, "events", kernel, body))


# ----------------------------------------------------------------------------- 4. scrape


async def scrape_latency(workers: int, series: int, scrapes: int) -> dict[str, Any]:
    """``GET /metrics`` of the parent, over loopback HTTP."""
    kernel = _kernel("--obs-http", "true", "--obs-addr", "127.0.0.1:0", series=series)

    async def body(kernel: Kernel[Any]) -> dict[str, Any]:
        url = kernel.urls()["metrics"]
        samples: list[float] = []
        size = 0
        async with aiohttp.ClientSession() as session:
            for n in range(scrapes + 3):
                t0 = time.perf_counter()
                async with session.get(url) as resp:
                    body = await resp.read()
                if n >= 3:  # the first scrapes warm caches (label strings, snapshots)
                    samples.append(time.perf_counter() - t0)
                size = len(body)
                await asyncio.sleep(0.05)
        text = body.decode()
        return {"ms": _ms(samples), "bytes": size,
                "rig_series": sum(1 for line in text.splitlines()
                                  if line.startswith("rig_series{")),
                "timeouts": kernel.metrics.counters.worker_scrape_timeouts_total.total()}

    return dict(await _run(workers, "series", kernel, body))


# ----------------------------------------------------------------------------- 5. http

CLIENT = r'''
import asyncio, json, resource, sys, time

async def conn(host, port, path, stop, counts, errors):
    reader, writer = await asyncio.open_connection(host, port)
    request = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    n = 0
    while time.monotonic() < stop:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            errors.append(head.split(b"\r\n", 1)[0])
        n += 1
    counts.append(n)
    writer.close()

async def main(host, port, path, seconds, conns):
    counts, errors = [], []
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    await asyncio.gather(*(conn(host, port, path, t0 + seconds, counts, errors)
                           for _ in range(conns)))
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"requests": sum(counts), "wall_s": wall, "cpu_s": cpu,
                      "errors": len(errors)}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]),
                 int(sys.argv[5])))
'''


async def http_rate(workers: int, seconds: float, conns: int) -> dict[str, Any]:
    """The example blob store: GET of one 4 KiB blob (read and BLAKE3-verified per request)
    on its one port, from a keep-alive client in another process; requests/s and the
    client's CPU (% of one core)."""
    with tempfile.TemporaryDirectory(prefix="rig-blobs-") as data:
        argv = ["--log-level", "warn", "--set", f"app.data_dir={data}",
                "--set", "app.listen=127.0.0.1:0"]
        config = Config.load(argv=argv, env={}, app=BLOBSTORE_CONFIG)
        kernel = Kernel(config, app_config=BLOBSTORE_CONFIG, env={}, argv=argv,
                        watch_config=False, handle_sighup=False)

        async def body(kernel: Kernel[Any]) -> dict[str, Any]:
            host, port = kernel.listeners.get(BLOBSTORE_SOCKET).getsockname()[:2]
            async with aiohttp.ClientSession() as session, \
                    session.put(f"http://{host}:{port}/o", data=os.urandom(4096)) as resp:
                blob = (await resp.json())["id"]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLIENT, host, str(port), f"/o/{blob}", str(seconds),
                str(conns), stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            done = json.loads(out)
            return {"requests_per_s": round(done["requests"] / done["wall_s"], 1),
                    "client_cpu_pct_of_a_core": round(100 * done["cpu_s"] / done["wall_s"], 1),
                    "errors": done["errors"], "load_avg_1m": round(os.getloadavg()[0], 2)}

        return dict(await _run(workers, "examples.blobstore:build", kernel, body))


# ----------------------------------------------------------------------------- 6. orphans

PARENT = r'''
import asyncio, json, sys
import ron_kernel._workers as workers
workers.USE_PDEATHSIG = sys.argv[1] == "pdeathsig"
from ron_kernel import Config
from ron_kernel.kernel import Kernel

async def main():
    kernel = Kernel(Config.load(argv=[], env={}), env={}, argv=[], watch_config=False,
                    handle_sighup=False)
    kernel.supervise_workers("w", app="benchmarks._workers_app:ok", count=2)
    await kernel.start()
    while kernel.status()["workers"]["w"]["ready"] < 2:
        await asyncio.sleep(0.05)
    print(json.dumps([w["pid"] for w in kernel.status()["workers"]["w"]["workers"].values()]),
          flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def orphan_exit(mode: str, rounds: int) -> dict[str, Any]:
    """Seconds from the parent's SIGKILL until both workers are gone."""
    took: list[float] = []
    for _ in range(rounds):
        parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, cwd=os.getcwd())
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        parent.kill()
        parent.wait()
        t0 = time.monotonic()
        while any(_alive(pid) for pid in pids) and time.monotonic() - t0 < 10:
            time.sleep(0.002)
        took.append(time.monotonic() - t0)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    return {"seconds": [round(t, 3) for t in took], "max_s": round(max(took), 3)}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the parts asked for, print the figures, optionally write JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter windows, fewer samples")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    args = p.parse_args(argv)
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    configure_logging(stream=io.StringIO(), level="warn")  # the rig's own kernels: quiet
    quick = args.quick
    results: dict[str, Any] = {"machine": machine_info(), "load_avg_at_start":
                               [round(x, 2) for x in os.getloadavg()]}
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if "cpu" in parts:
        window = 3.0 if quick else 8.0
        zero = asyncio.run(cpu_rate(0, window))
        two = asyncio.run(cpu_rate(2, window))
        results["cpu"] = {"workers_0": zero, "workers_2": two,
                          "ratio": round(two["units_per_s"] / zero["units_per_s"], 3)}
        print(f"cpu: 0 workers {zero['units_per_s']:.0f} units/s on {zero['cores_used']} cores "
              f"(load {zero['load_avg_1m']}), 2 workers {two['units_per_s']:.0f} units/s on "
              f"{two['cores_used']} cores (load {two['load_avg_1m']}) = "
              f"{results['cpu']['ratio']:.2f}x (target >= 1.7x); units per CPU-second "
              f"{zero['units_per_cpu_s']:.0f} vs {two['units_per_cpu_s']:.0f}")
    if "crash" in parts:
        crash = asyncio.run(crash_latency(8 if quick else 25))
        results["crash"] = crash
        k, b = crash["kernel_ms"], crash["baseline_ms"]
        print(f"crash -> ServiceCrashed: p50 {k['p50']:.2f} p95 {k['p95']:.2f} p99 "
              f"{k['p99']:.2f} ms (target p95 < 50 ms); bare subprocess kill -> wait(): p50 "
              f"{b['p50']:.2f} p95 {b['p95']:.2f} ms")
    if "events" in parts:
        window = 2.0 if quick else 5.0
        base = asyncio.run(event_rate(0, 50_000, window))
        one = asyncio.run(event_rate(1, 50_000, window))
        two = asyncio.run(event_rate(2, 50_000, window))
        results["events"] = {"workers_0": base, "workers_1": one, "workers_2": two}
        print(f"events at 50k/s per source: in process {base['per_source_per_s']}, "
              f"1 worker {one['per_source_per_s']} lost {one['events_lost']}, "
              f"2 workers {two['per_source_per_s']} lost {two['events_lost']} "
              f"(target >= 50k/s per worker, no loss)")
    if "scrape" in parts:
        scrapes = 10 if quick else 30
        base = asyncio.run(scrape_latency(0, 2000, scrapes))
        four = asyncio.run(scrape_latency(4, 2000, scrapes))
        results["scrape"] = {"workers_0": base, "workers_4": four}
        print(f"/metrics: in process (2k series) p50 {base['ms']['p50']:.1f} p95 "
              f"{base['ms']['p95']:.1f} ms; 4 workers x 2k series ({four['rig_series']} "
              f"series, {four['bytes']} bytes) p50 {four['ms']['p50']:.1f} p95 "
              f"{four['ms']['p95']:.1f} ms (target p95 < 50 ms)")
    if "http" in parts:
        window, conns = (3.0, 8) if quick else (8.0, 16)
        zero = asyncio.run(http_rate(0, window, conns))
        two = asyncio.run(http_rate(2, window, conns))
        results["http"] = {"workers_0": zero, "workers_2": two,
                           "ratio": round(two["requests_per_s"] / zero["requests_per_s"], 3)}
        print(f"shared port: 0 workers {zero['requests_per_s']:.0f} req/s (client "
              f"{zero['client_cpu_pct_of_a_core']}% of a core), 2 workers "
              f"{two['requests_per_s']:.0f} req/s (client {two['client_cpu_pct_of_a_core']}% "
              f"of a core) = {results['http']['ratio']:.2f}x")
    if "orphans" in parts:
        rounds = 2 if quick else 5
        results["orphans"] = {"pdeathsig": orphan_exit("pdeathsig", rounds),
                              "fallback": orphan_exit("fallback", rounds)}
        print(f"parent SIGKILLed -> workers gone: pdeathsig max "
              f"{results['orphans']['pdeathsig']['max_s']} s, fallback max "
              f"{results['orphans']['fallback']['max_s']} s (target <= 2 s)")
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    results["children_cpu_s"] = round((usage1.ru_utime - usage0.ru_utime)
                                      + (usage1.ru_stime - usage0.ru_stime), 2)
    results["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
