"""HTTP and metrics benchmark: ``python -m benchmarks.http [--quick] [--json FILE]``.

Every figure is printed next to a same-run baseline:

* **readyz** — ``GET /readyz`` round trip p50/p95/p99 over one keep-alive loopback connection
  (a minimal raw-socket client on the same loop, so client overhead stays small). Baseline: a
  static ``GET /plain`` route on the same aiohttp server (``extra_routes``), which isolates what
  the readiness handler adds.
* **render** — ``Metrics.render()`` at 2,000 kernel series vs ``prometheus_client
  .generate_latest`` on the same 2,000 series registered as ordinary ``Counter`` children.
* **scrape loop block** — the longest event-loop stall seen by a 1 ms ticker task while a client
  scrapes ``/metrics`` (rendered in a worker thread) vs ``/metrics-inline`` (the plain registry
  rendered on the loop, the usual aiohttp + prometheus_client idiom).
* **readiness flip** — ``HealthState.set`` to the first ``/readyz`` answer that shows the change,
  seen by a client polling on a keep-alive connection.

``run(args)`` returns a plain dict of numbers; ``main()`` prints tables, ``--plot FILE.png``
draws the distributions. Targets (issue 3) are reported, never asserted; the ratios the
regression gate compares are in ``results["ratios"]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

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
from ron_kernel import Metrics

RIG = "http"
SERIES = 2000

TARGETS = {
    "readyz_p95_ms": 1.0,
    "render_2000_ms": 10.0,
    "scrape_loop_block_max_ms": 10.0,
    "flip_p95_ms": 15.0,
}


# ------------------------------------------------------------------------------ fixtures


def populate(metrics: Metrics, series: int = SERIES) -> None:
    """Fill the kernel families with ``series`` label sets (half restarts, half rejections)."""
    k = metrics.counters
    for i in range(series // 2):
        k.service_restarts_total.inc(f"svc-{i:05d}", amount=i)
        k.busy_rejections_total.inc(f"queue-{i:05d}", amount=i)


def plain_registry(series: int = SERIES) -> CollectorRegistry:
    """The same series as :func:`populate`, as ordinary prometheus_client Counters."""
    registry = CollectorRegistry()
    restarts = Counter("service_restarts", "Restarts.", ("service", "amnesia"), registry=registry)
    busy = Counter("busy_rejections", "Rejections.", ("queue", "amnesia"), registry=registry)
    for i in range(series // 2):
        restarts.labels(f"svc-{i:05d}", "off").inc(i)
        busy.labels(f"queue-{i:05d}", "off").inc(i)
    return registry


class _Client:
    """A tiny keep-alive HTTP/1.1 GET client over asyncio streams (Content-Length bodies)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> _Client:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        return status, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def _plain(request: web.Request) -> web.Response:
    return web.Response(body=b'{"ok":true}', content_type="application/json")


async def _serve(metrics: Metrics, inline_registry: CollectorRegistry | None = None
                 ) -> tuple[asyncio.Task[None], tuple[str, int]]:
    routes: list[tuple[str, str, Callable[[web.Request], Coroutine[Any, Any, web.Response]]]]
    routes = [("GET", "/plain", _plain)]
    if inline_registry is not None:
        registry = inline_registry

        async def inline(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry))

        routes.append(("GET", "/metrics-inline", inline))
    return await metrics.serve("127.0.0.1:0", extra_routes=routes)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------------------ cases


async def _readyz_case(requests: int) -> dict[str, Any]:
    m = Metrics()
    m.health.set("svc", True)
    task, (host, port) = await _serve(m)
    client = await _Client.connect(host, port)
    out: dict[str, Any] = {RAW: {}}
    try:
        for path in ("/readyz", "/plain"):
            for _ in range(min(200, requests)):  # warm-up
                await client.get(path)
            samples: list[float] = []
            for _ in range(requests):
                start = time.perf_counter()
                status, _ = await client.get(path)
                samples.append((time.perf_counter() - start) * 1e3)
                assert status == 200, status
            p = percentiles(samples)
            out[path.strip("/")] = {k: v for k, v in p.items()}
            out[RAW][path.strip("/")] = thin(samples)
    finally:
        await client.close()
        await _stop(task)
    out["requests"] = requests
    return out


def _render_case(repeats: int) -> dict[str, Any]:
    m = Metrics()
    populate(m)
    registry = plain_registry()
    kernel_series = sum(1 for line in m.render().splitlines() if not line.startswith(b"#"))

    def idiom() -> bytes:
        return generate_latest(registry)

    # Paired samples: the two renderers alternate (and swap which goes first), so a burst of load
    # on a shared machine slows both sides of the ratio alike. Timed as two blocks (all of ours,
    # then all of generate_latest), the 30 ms block of ours caught or missed a burst on its own:
    # the quick run's p50 ratio ranged 0.087..0.285 in 12 runs, against 0.156..0.209 paired.
    m.render()
    idiom()
    ours_ms: list[float] = []
    plain_ms: list[float] = []
    for i in range(repeats):
        pair: list[tuple[Callable[[], bytes], list[float]]] = [(m.render, ours_ms),
                                                               (idiom, plain_ms)]
        for fn, samples in pair if i % 2 == 0 else reversed(pair):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
    ours, plain = percentiles(ours_ms), percentiles(plain_ms)
    return {"series_total": kernel_series, "render_ms": ours, "generate_latest_ms": plain,
            "ratio_p50": ours["p50"] / plain["p50"], "bytes": len(m.render()),
            "plain_bytes": len(generate_latest(registry)),
            RAW: {"render": ours_ms, "generate_latest": plain_ms}}


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + 0.001
        await asyncio.sleep(0.001)
        lags.append(max(0.0, (loop.time() - expected) * 1e3))


async def _scrape_block_case(scrapes: int) -> dict[str, Any]:
    m = Metrics()
    populate(m)
    task, (host, port) = await _serve(m, plain_registry())
    client = await _Client.connect(host, port)
    out: dict[str, Any] = {}
    # As `ron-kernel run` does after start: move the start-up heap out of the collector's
    # reach, so a full (gen 2) collection does not scan every imported module (13-20 ms here)
    # in the middle of a scrape. Both renderers are measured under the same condition.
    gc.collect()
    gc.freeze()
    try:
        for path in ("/metrics", "/metrics-inline"):
            await client.get(path)
            idle: list[float] = []
            stop = asyncio.Event()
            ticker = asyncio.create_task(_ticker(idle, stop))
            await asyncio.sleep(0.1)  # the ticker's own jitter with nothing else running
            lags: list[float] = []
            ticker_lags = idle
            scrape_ms: list[float] = []
            mark = len(ticker_lags)
            for _ in range(scrapes):
                start = time.perf_counter()
                status, body = await client.get(path)
                scrape_ms.append((time.perf_counter() - start) * 1e3)
                assert status == 200 and body
                await asyncio.sleep(0.005)
            stop.set()
            await ticker
            lags = ticker_lags[mark:]
            out[path.strip("/")] = {
                "loop_block_max_ms": max(lags) if lags else float("nan"),
                "loop_block_p99_ms": percentiles(lags)["p99"],
                "idle_jitter_max_ms": max(ticker_lags[:mark]) if mark else float("nan"),
                "scrape": percentiles(scrape_ms),
                RAW: thin(lags),
            }
    finally:
        gc.unfreeze()
        await client.close()
        await _stop(task)
    out["scrapes"] = scrapes
    return out


async def _flip_case(flips: int) -> dict[str, Any]:
    m = Metrics()
    m.health.set("svc", True)
    task, (host, port) = await _serve(m)
    client = await _Client.connect(host, port)
    samples: list[float] = []
    try:
        for i in range(flips):
            ok = i % 2 == 1
            want = 200 if ok else 503
            await asyncio.sleep(0.002)
            start = time.perf_counter()
            m.health.set("svc", ok)
            while True:
                status, _ = await client.get("/readyz")
                if status == want:
                    break
            samples.append((time.perf_counter() - start) * 1e3)
    finally:
        await client.close()
        await _stop(task)
    return {"flips": flips, "flip_ms": percentiles(samples), RAW: samples}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement selected by ``args``; return a plain dict of numbers."""
    quick: bool = args.quick
    flavors = loops_of(args)
    requests = 1000 if quick else args.requests
    scrapes = 10 if quick else 50
    flips = 100 if quick else 500
    with progress(1 + 3 * len(flavors), "http", enabled=show_progress(args)) as bar:
        bar.advance(f"render at {SERIES} series")
        render = _render_case(10 if quick else 50)
        results: dict[str, Any] = {
            "config": {"quick": quick, "loops": flavors, "series": SERIES, "requests": requests,
                       "scrapes": scrapes, "flips": flips},
            "render": render, "per_loop": {}, RAW: {"render": render.pop(RAW)},
        }
        for flavor in flavors:
            bar.advance(f"{flavor}: /readyz vs /plain")
            readyz = run_on_loop(flavor, _readyz_case(requests))
            bar.advance(f"{flavor}: /metrics scrapes, loop block")
            scrape = run_on_loop(flavor, _scrape_block_case(scrapes))
            bar.advance(f"{flavor}: readiness flips")
            flip = run_on_loop(flavor, _flip_case(flips))
            results[RAW][flavor] = {
                "readyz": readyz.pop(RAW), "flip": flip.pop(RAW),
                "block": {k: scrape[k].pop(RAW) for k in ("metrics", "metrics-inline")}}
            results["per_loop"][flavor] = {"readyz": readyz, "scrape": scrape, "flip": flip}
    results["targets"] = _targets(results)
    _gate_ratios(results)
    return results


def _gate_ratios(results: dict[str, Any]) -> None:
    r = results["render"]
    add_ratio(results, "render_p50", r["render_ms"]["p50"], r["generate_latest_ms"]["p50"],
              klass="latency_p95", unit="ms")
    for flavor, row in results["per_loop"].items():
        rz = row["readyz"]
        add_ratio(results, f"{flavor}:readyz_p95", rz["readyz"]["p95"], rz["plain"]["p95"],
                  klass="latency_p95", unit="ms")
        add_ratio(results, f"{flavor}:readyz_p99", rz["readyz"]["p99"], rz["plain"]["p99"],
                  klass="latency_p99", unit="ms")


def plot(results: dict[str, Any], path: Path) -> Path:
    """Latency distributions: /readyz, render, loop block during scrapes, readiness flip."""
    raw = results[RAW]
    readyz: dict[str, list[float]] = {}
    block: dict[str, list[float]] = {}
    flip: dict[str, list[float]] = {}
    for flavor in results["per_loop"]:
        readyz[f"{flavor}\n/readyz"] = raw[flavor]["readyz"]["readyz"]
        readyz[f"{flavor}\n/plain"] = raw[flavor]["readyz"]["plain"]
        block[f"{flavor}\n/metrics"] = raw[flavor]["block"]["metrics"]
        block[f"{flavor}\non-loop plain"] = raw[flavor]["block"]["metrics-inline"]
        flip[flavor] = raw[flavor]["flip"]
    series = results["config"]["series"]
    panels = [
        Panel("GET round trip, keep-alive loopback", "loop, route",
              "ms (log scale)", distributions=readyz, logy=True),
        Panel(f"/metrics text at {series:,} series", "renderer", "ms per render",
              distributions={"Metrics.render()": raw["render"]["render"],
                             "generate_latest\n(plain registry)":
                             raw["render"]["generate_latest"]}),
        Panel("Event-loop lateness of a 1 ms ticker during scrapes", "loop, /metrics renderer",
              "ms late", distributions=block),
        Panel("HealthState.set -> /readyz shows it", "loop", "ms", distributions=flip),
    ]
    return save_plot(path, "ron-kernel HTTP endpoints (baselines: /plain route, plain "
                     "prometheus_client)", panels)


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    render = results["render"]["render_ms"]["p50"]
    out["render_2000_ms"] = {"value": render, "target": TARGETS["render_2000_ms"],
                             "met": render <= TARGETS["render_2000_ms"]}
    for flavor, row in results["per_loop"].items():
        got = {
            "readyz_p95_ms": row["readyz"]["readyz"]["p95"],
            "scrape_loop_block_max_ms": row["scrape"]["metrics"]["loop_block_max_ms"],
            "flip_p95_ms": row["flip"]["flip_ms"]["p95"],
        }
        for key, value in got.items():
            out[f"{flavor}:{key}"] = {"value": value, "target": TARGETS[key],
                                      "met": value <= TARGETS[key]}
    return out


def report(results: dict[str, Any]) -> str:
    """Render ``results`` as readable tables."""
    r = results["render"]
    lines = [
        "", f"/metrics render at {results['config']['series']} series "
        f"({r['series_total']} samples incl. the rest of the kernel set), ms",
        f"{'':<22}{'p50':>9}{'p95':>9}{'max':>9}{'bytes':>10}",
        f"{'Metrics.render()':<22}{r['render_ms']['p50']:>9.2f}{r['render_ms']['p95']:>9.2f}"
        f"{r['render_ms']['max']:>9.2f}{r['bytes']:>10}",
        f"{'generate_latest plain':<22}{r['generate_latest_ms']['p50']:>9.2f}"
        f"{r['generate_latest_ms']['p95']:>9.2f}{r['generate_latest_ms']['max']:>9.2f}"
        f"{r['plain_bytes']:>10}",
        f"ratio ours/plain (p50): {r['ratio_p50']:.2f}",
        "", "Per loop (ms)",
        f"{'loop':<8}{'case':<34}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}",
    ]
    for flavor, row in results["per_loop"].items():
        rz = row["readyz"]
        for name, key in (("/readyz (keep-alive)", "readyz"), ("/plain baseline", "plain")):
            p = rz[key]
            lines.append(f"{flavor:<8}{name:<34}{p['p50']:>9.3f}{p['p95']:>9.3f}"
                         f"{p['p99']:>9.3f}{p['max']:>9.3f}")
        lines.append(f"{flavor:<8}{'readyz/plain (p50 ratio)':<34}"
                     f"{rz['readyz']['p50'] / rz['plain']['p50']:>9.2f}")
        for name, key in (("/metrics scrape (ron-kernel)", "metrics"),
                          ("/metrics-inline (plain, on loop)", "metrics-inline")):
            s = row["scrape"][key]
            lines.append(f"{flavor:<8}{name:<34}{s['scrape']['p50']:>9.2f}{s['scrape']['p95']:>9.2f}"
                         f"{s['scrape']['p99']:>9.2f}{s['scrape']['max']:>9.2f}")
            lines.append(f"{flavor:<8}{'  loop block during it (max, p99)':<34}"
                         f"{s['loop_block_max_ms']:>9.2f}{s['loop_block_p99_ms']:>9.2f}"
                         f"{'idle jitter max':>18}{s['idle_jitter_max_ms']:>6.2f}")
        f = row["flip"]["flip_ms"]
        lines.append(f"{flavor:<8}{'readiness flip -> /readyz':<34}{f['p50']:>9.3f}{f['p95']:>9.3f}"
                     f"{f['p99']:>9.3f}{f['max']:>9.3f}")
    lines += target_lines("issue 3", results["targets"])
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The rig's command-line flags."""
    p = base_parser("/readyz latency, /metrics render and loop block, readiness flip")
    p.add_argument("--requests", type=int, default=5000, help="/readyz requests per loop")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: run, print the tables, optionally write JSON and a plot."""
    return rig_main(RIG, parser(), run, report, plot, argv)


if __name__ == "__main__":
    main()
