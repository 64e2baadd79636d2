"""Soak: restart storms, bus overflow, a config reload loop and HTTP scrapes, together, for long.

``python -m benchmarks.soak --duration 3600 --interval 10 --json FILE`` (``make soak``;
``make soak-smoke`` is the 2-minute CI version). One process, one event loop, one real
:class:`~ron_kernel.kernel.Kernel` with HTTP on ``127.0.0.1:0``, and at the same time:

* **restart storms** — permanent children of the root supervisor crash every 250, 500 and
  1000 ms and are restarted after 10-100 ms backoffs; a child of a nested supervisor with a tight
  restart budget is quarantined again and again and released periodically;
* **bus overflow** — a fast publisher, a slow receiver and a stalled one, so ``bus_lagged_total``
  keeps growing;
* **config reloads** — the config file is rewritten (atomically) alternating two valid variants,
  every few writes an invalid one, and ``kernel.config_cell.reload()`` runs at 5 Hz;
* **scrapes** — ``/metrics`` every second and ``/readyz`` every 100 ms over loopback.

Every ``--interval`` seconds it samples RSS and open file descriptors and the golden counters.
The verdict (exit 1 on FAIL; see docs/SOAK.md): RSS growth after warm-up below
``--rss-tolerance`` % (5), FD count flat (end <= warm-up baseline + ``--fd-tolerance``), every
expected metric pattern seen in every quarter of the run, no scrape or task error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from benchmarks._common import machine_info, new_loop
from ron_kernel import KernelEvent
from ron_kernel.errors import Closed, Empty, Lagged
from ron_kernel.kernel import Kernel
from ron_kernel.logging import configure_logging
from ron_kernel.supervisor import ChildContext, Supervisor

__all__ = ["SoakOptions", "evaluate", "main", "run_soak"]

PATTERNS = ("service_restarts_total", "bus_lagged_total", "config_reloads_applied",
            "config_reloads_rejected", "readyz_quarantine_flips", "readyz_recoveries")
"""The counters that must keep rising in every quarter of the run (see :func:`evaluate`)."""

QUARTERS = 4
MAX_ERRORS_KEPT = 50

_CONFIG = """\
[supervisor]
min_backoff = "10ms"
max_backoff = "100ms"
restart_cap = 50
restart_window = "1s"
reset_after = "100ms"

[bus]
capacity = {capacity}

[observability]
expose_http = true
addr = "127.0.0.1:0"

[log]
level = "error"

[pq]
mode = "{pq}"

[shutdown]
drain_deadline = "{drain}"
"""

_VALID = ({"pq": "off", "drain": "2s"}, {"pq": "hybrid", "drain": "3s"})


@dataclass(slots=True)
class SoakOptions:
    """What the soak runs and how it judges. Defaults are those of ``make soak``.

    ``warmup=None`` means the larger of 10 % of ``duration`` and 30 s, but at most half of
    ``duration`` (so a short run still has samples to judge).
    """

    duration: float = 3600.0
    interval: float = 10.0
    warmup: float | None = None
    crash_periods: tuple[float, ...] = (0.25, 0.5, 1.0)
    crashers_per_period: int = 2
    flaky_period: float = 0.5
    flaky_cap: int = 3
    release_every: float = 4.0
    reload_hz: float = 5.0
    invalid_every: int = 7
    bus_capacity: int = 1024
    publish_batch: int = 500
    publish_every: float = 0.1
    slow_delay: float = 0.002
    stall_for: float = 2.0
    metrics_every: float = 1.0
    readyz_every: float = 0.1
    rss_tolerance_pct: float = 5.0
    fd_tolerance: int = 8
    loop: str = "asyncio"
    log_file: str = os.devnull

    def effective_warmup(self) -> float:
        """The warm-up actually used (see the class docstring)."""
        if self.warmup is not None:
            return min(self.warmup, self.duration / 2)
        return min(max(0.1 * self.duration, 30.0), self.duration / 2)


@dataclass(slots=True)
class _State:
    """What the load tasks count while they run (read by the sampler)."""

    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    published: int = 0
    slow_received: int = 0
    slow_lagged: int = 0
    stalled_lagged: int = 0
    writes: int = 0
    invalid_writes: int = 0
    releases: int = 0
    metrics_scrapes: int = 0
    readyz: dict[int, int] = field(default_factory=dict)
    quarantine_flips: int = 0
    recoveries: int = 0
    quarantined_seen: bool = False
    counters: dict[str, float] = field(default_factory=dict)

    def error(self, where: str, exc: BaseException) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{where}: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------- helpers


def _fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        return int(psutil.Process().num_fds())


HTTP_TIMEOUT = 5.0


async def _http_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """One ``GET`` over a fresh loopback connection (closed afterwards: no pooled FDs)."""
    async with asyncio.timeout(HTTP_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)
    if len(status) < 2 or not status[1].isdigit():
        raise ValueError(f"GET {path}: not an HTTP response ({head[:60]!r})")
    return int(status[1]), body


def parse_counters(text: str) -> dict[str, float]:
    """The soak's counters from a Prometheus text exposition (families summed over labels)."""
    out = {"service_restarts_total": 0.0, "bus_lagged_total": 0.0,
           "config_reloads_applied": 0.0, "config_reloads_rejected": 0.0}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        if name in ("service_restarts_total", "bus_lagged_total"):
            out[name] += float(value)
        elif name == "config_reloads_total":
            if 'outcome="applied"' in name_labels:
                out["config_reloads_applied"] += float(value)
            elif 'outcome="rejected"' in name_labels:
                out["config_reloads_rejected"] += float(value)
    return out


def _crasher(period: float) -> Callable[[ChildContext], Awaitable[None]]:
    async def crasher(ctx: ChildContext) -> None:
        # Does not call ctx.ready(): a storm child must not make readiness flap on its own.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.shutdown.wait(), timeout=period)
            return
        raise RuntimeError(f"soak: scheduled crash after {period}s")

    return crasher


async def _steady(ctx: ChildContext) -> None:
    ctx.ready()
    await ctx.shutdown.wait()


def _open_log(path: str) -> TextIO:
    return open(path, "a", encoding="utf-8")  # once, before the load starts


def _write_config(path: Path, body: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)  # what editors do; a reader never sees half a file from us


def _config_body(index: int, options: SoakOptions) -> tuple[str, bool]:
    """The ``index``-th file of the reload loop and whether it is valid."""
    if options.invalid_every > 0 and index % options.invalid_every == options.invalid_every - 1:
        valid = _CONFIG.format(capacity=options.bus_capacity, **_VALID[0])
        if (index // options.invalid_every) % 2:
            return valid[: len(valid) // 2] + '\n[bus\ncapacity = "', False  # truncated, broken
        return valid.replace("[log]\n", '[log]\nlevel = "loud"\n#'), False  # bad value
    return _CONFIG.format(capacity=options.bus_capacity, **_VALID[index % 2]), True


# ----------------------------------------------------------------------------- the run


async def run_soak(options: SoakOptions) -> dict[str, Any]:
    """Run the soak for ``options.duration`` seconds and return the report (see docs/SOAK.md)."""
    loop = asyncio.get_running_loop()
    state = _State()
    process = psutil.Process()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ron-soak-") as tmp, \
            _open_log(options.log_file) as log_stream:
        config_path = Path(tmp) / "Config.toml"
        _write_config(config_path, _config_body(0, options)[0])
        kernel = Kernel(path=config_path, env={}, argv=[], watch_config=False,
                        handle_sighup=False)
        flaky_sup = Supervisor(name="soak-flaky-sup", bus=kernel.bus, metrics=kernel.metrics,
                               health=kernel.health, min_backoff=0.01, max_backoff=0.05,
                               restart_cap=options.flaky_cap, restart_window=3600.0)
        flaky_sup.add("soak-flaky", _crasher(options.flaky_period))
        kernel.supervise("soak-steady", _steady)
        for period in options.crash_periods:
            for n in range(options.crashers_per_period):
                kernel.supervise(f"soak-crash-{int(period * 1000)}ms-{n}", _crasher(period))
        kernel.supervise("soak-flaky-sup", flaky_sup)
        await kernel.start()
        # A soak logs thousands of crashes: keep them off the terminal (to --log FILE).
        configure_logging(format="json", level="error", stream=log_stream)
        assert kernel.http_addr is not None
        host, port = kernel.http_addr

        async def every(name: str, period: float, step: Callable[[], Awaitable[None]]) -> None:
            next_at = loop.time()
            while True:
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # counted and reported: a soak must keep going
                    state.error(name, exc)
                next_at += period
                await asyncio.sleep(max(0.0, next_at - loop.time()))

        async def publish() -> None:
            event = KernelEvent.Health(service="soak-publisher", ok=True)
            for _ in range(options.publish_batch):
                kernel.bus.publish(event)
            state.published += options.publish_batch

        async def slow_receiver() -> None:
            rx = kernel.bus.subscribe()
            try:
                while True:
                    try:
                        await rx.recv()
                        state.slow_received += 1
                    except Lagged:
                        state.slow_lagged += 1
                    except Closed:
                        return
                    await asyncio.sleep(options.slow_delay)
            finally:
                rx.close()

        async def stalled_receiver() -> None:
            rx = kernel.bus.subscribe()
            try:
                while True:
                    await asyncio.sleep(options.stall_for)  # stalled: reads nothing meanwhile
                    while True:
                        try:
                            rx.try_recv()
                        except Lagged:
                            state.stalled_lagged += 1
                        except (Empty, Closed):
                            break
            finally:
                rx.close()

        async def reload_step() -> None:
            body, valid = _config_body(state.writes + 1, options)
            _write_config(config_path, body)
            state.writes += 1
            state.invalid_writes += not valid
            kernel.config_cell.reload()

        async def release_step() -> None:
            if flaky_sup.release("soak-flaky"):
                state.releases += 1

        async def scrape_metrics() -> None:
            status, body = await _http_get(host, port, "/metrics")
            if status != 200:
                raise ValueError(f"/metrics answered {status}")
            state.counters = parse_counters(body.decode("utf-8", "replace"))
            state.metrics_scrapes += 1

        async def scrape_readyz() -> None:
            status, body = await _http_get(host, port, "/readyz")
            state.readyz[status] = state.readyz.get(status, 0) + 1
            if status not in (200, 503):
                raise ValueError(f"/readyz answered {status}")
            quarantined = status == 503 and b"quarantined:soak-flaky" in body
            if quarantined and not state.quarantined_seen:
                state.quarantine_flips += 1
            elif not quarantined and state.quarantined_seen and status == 200:
                state.recoveries += 1
            if quarantined or status == 200:
                state.quarantined_seen = quarantined

        started = loop.time()

        async def sample() -> None:
            await scrape_metrics()
            samples.append({
                "t": round(loop.time() - started, 3),
                "rss_bytes": process.memory_info().rss,
                "fds": _fd_count(),
                **state.counters,
                "readyz_quarantine_flips": state.quarantine_flips,
                "readyz_recoveries": state.recoveries,
                "published": state.published,
            })

        await sample()
        tasks = [
            loop.create_task(every("publisher", options.publish_every, publish)),
            loop.create_task(slow_receiver()),
            loop.create_task(stalled_receiver()),
            loop.create_task(every("reload", 1.0 / options.reload_hz, reload_step)),
            loop.create_task(every("release", options.release_every, release_step)),
            loop.create_task(every("metrics", options.metrics_every, scrape_metrics)),
            loop.create_task(every("readyz", options.readyz_every, scrape_readyz)),
        ]
        try:
            while (left := started + options.duration - loop.time()) > 0:
                await asyncio.sleep(min(options.interval, left))
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        exc = task.exception()
                        assert exc is not None
                        raise RuntimeError(f"a soak task died: {exc!r}") from exc
                try:
                    await sample()
                except Exception as exc:
                    state.error("sample", exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await kernel.shutdown(deadline=2.0)
            configure_logging()  # back to stderr for whoever runs next in this process
    return evaluate(options, samples, state)


# ----------------------------------------------------------------------------- the verdict


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _rising(samples: list[dict[str, Any]], key: str, duration: float) -> dict[str, Any]:
    """Did ``key`` increase in every quarter of the run? (sustained, not a one-off burst)"""
    values = [(s["t"], float(s.get(key, 0.0))) for s in samples]
    start, end = values[0][1], values[-1][1]
    bounds = [duration * q / QUARTERS for q in range(QUARTERS + 1)]
    rose_in = 0
    for lo, hi in itertools.pairwise(bounds):
        inside = [v for t, v in values if t <= hi + 1e-9]
        before = [v for t, v in values if t <= lo + 1e-9] or [start]
        if inside and inside[-1] > before[-1]:
            rose_in += 1
    return {"start": start, "end": end, "quarters_rising": rose_in, "quarters": QUARTERS,
            "ok": end > start and rose_in == QUARTERS}


def evaluate(options: SoakOptions, samples: list[dict[str, Any]],
             state: Any = None) -> dict[str, Any]:
    """Turn the samples into the report: RSS, FDs, metric patterns, errors and the verdict."""
    warmup = options.effective_warmup()
    after = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    rss = [s["rss_bytes"] for s in samples]
    fds = [s["fds"] for s in samples]
    rss_base = _median([s["rss_bytes"] for s in after[:3]])
    rss_end = _median([s["rss_bytes"] for s in samples[-3:]])
    growth = (rss_end - rss_base) / rss_base * 100 if rss_base else float("nan")
    fd_base = int(_median([s["fds"] for s in after[:3]]))
    duration = samples[-1]["t"] if samples else 0.0
    patterns = {key: _rising(samples, key, duration) for key in PATTERNS}
    errors = list(getattr(state, "errors", []))
    error_count = int(getattr(state, "error_count", 0))
    checks = {
        "rss_growth": growth < options.rss_tolerance_pct,
        "fds_flat": fds[-1] <= fd_base + options.fd_tolerance,
        "patterns": all(p["ok"] for p in patterns.values()),
        "no_errors": error_count == 0,
    }
    activity = {}
    if state is not None:
        activity = {
            "published": state.published, "slow_received": state.slow_received,
            "slow_lagged": state.slow_lagged, "stalled_lagged": state.stalled_lagged,
            "config_writes": state.writes, "invalid_config_writes": state.invalid_writes,
            "releases": state.releases, "metrics_scrapes": state.metrics_scrapes,
            "readyz_status_counts": {str(k): v for k, v in sorted(state.readyz.items())},
        }
    return {
        "rig": "soak",
        "machine": machine_info(),
        "options": asdict(options),
        "duration_s": duration,
        "warmup_s": warmup,
        "rss": {"start_bytes": rss[0], "end_bytes": rss[-1], "max_bytes": max(rss),
                "baseline_after_warmup_bytes": rss_base, "end_median_bytes": rss_end,
                "growth_pct": round(growth, 3), "tolerance_pct": options.rss_tolerance_pct},
        "fds": {"start": fds[0], "end": fds[-1], "max": max(fds),
                "baseline_after_warmup": fd_base, "tolerance": options.fd_tolerance},
        "patterns": patterns,
        "activity": activity,
        "errors": errors,
        "error_count": error_count,
        "checks": checks,
        "verdict": "PASS" if all(checks.values()) else "FAIL",
        "samples": samples,
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def print_report(report: dict[str, Any]) -> None:
    """A short human summary of :func:`run_soak`'s report."""
    rss, fds, checks = report["rss"], report["fds"], report["checks"]
    print(f"soak: {report['duration_s']:.0f}s on {report['options']['loop']}, "
          f"warm-up {report['warmup_s']:.0f}s, {len(report['samples'])} samples")
    print(f"  RSS  start {_mib(rss['start_bytes'])}  after warm-up "
          f"{_mib(rss['baseline_after_warmup_bytes'])}  end {_mib(rss['end_median_bytes'])}  "
          f"max {_mib(rss['max_bytes'])}  growth {rss['growth_pct']:+.2f}% "
          f"(< {rss['tolerance_pct']}%)  {'ok' if checks['rss_growth'] else 'FAIL'}")
    print(f"  FDs  start {fds['start']}  after warm-up {fds['baseline_after_warmup']}  "
          f"end {fds['end']}  max {fds['max']}  (end <= baseline + {fds['tolerance']})  "
          f"{'ok' if checks['fds_flat'] else 'FAIL'}")
    for key, p in report["patterns"].items():
        print(f"  {key:<26} {p['start']:>10.0f} -> {p['end']:>10.0f}  rising in "
              f"{p['quarters_rising']}/{p['quarters']} quarters  {'ok' if p['ok'] else 'FAIL'}")
    if report["activity"]:
        print("  activity: " + ", ".join(f"{k}={v}" for k, v in report["activity"].items()))
    print(f"  errors: {report['error_count']}" +
          "".join(f"\n    {e}" for e in report["errors"][:10]))
    print(f"soak: {report['verdict']}")


def main(argv: list[str] | None = None) -> int:
    """Command line: run the soak, print the summary, write ``--json``; 1 on FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds (3600)")
    parser.add_argument("--interval", type=float, default=10.0, help="sampling period (10 s)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds excluded from the RSS judgement (default: max(10%%, 30 s))")
    parser.add_argument("--rss-tolerance", type=float, default=5.0, help="max RSS growth %% (5)")
    parser.add_argument("--fd-tolerance", type=int, default=8, help="max extra FDs (8)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--log", default=os.devnull, help="kernel log file (default: discarded)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the full report")
    args = parser.parse_args(argv)
    options = SoakOptions(duration=args.duration, interval=args.interval, warmup=args.warmup,
                          rss_tolerance_pct=args.rss_tolerance, fd_tolerance=args.fd_tolerance,
                          loop=args.loop, log_file=args.log)
    loop = new_loop(options.loop)
    try:
        report = loop.run_until_complete(run_soak(options))
    finally:
        loop.close()
    print_report(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"soak: report written to {args.json}")
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
