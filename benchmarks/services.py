"""Services-on-the-kernel rig: what the typed app config and the shutdown-aware waits cost.

    python -m benchmarks.services [--quick] [--json FILE]

1. Reload validate+swap p95 with a 30-field app model (a frozen dataclass: ints, strings,
   booleans, durations and a nested table) against the same-run baseline: the kernel-only
   reload of the same kernel keys. Target: at most +1 ms.
2. Per-message cost of a child parked in ``ctx.wait(rx.recv())`` against a bare
   ``rx.recv()`` loop on the same bus, same run. Target: at most 2x. ``ctx.wait`` creates no
   task; ``ctx.sleep`` is ``ctx.wait(asyncio.sleep(...))``.

Figures only: nothing here is asserted; record them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks._common import percentiles
from ron_kernel import Bus, Config
from ron_kernel.config import ConfigCell
from ron_kernel.logging import configure_logging
from ron_kernel.supervisor import ChildContext


@dataclasses.dataclass(frozen=True)
class Nested:
    """Five nested fields."""

    host: str = "db.local"
    port: int = 5432
    pool_size: int = 8
    timeout: timedelta = timedelta(seconds=2)
    tls: bool = True


def _app_model() -> type[Any]:
    fields: list[tuple[str, Any, Any]] = []
    for i in range(25):
        kind = (int, str, bool, timedelta, float)[i % 5]
        default = {int: i, str: f"s{i}", bool: i % 2 == 0, timedelta: timedelta(seconds=i),
                   float: i / 2}[kind]
        fields.append((f"f{i:02d}", kind, dataclasses.field(default=default)))
    fields.append(("db", Nested, dataclasses.field(default_factory=Nested)))
    return dataclasses.make_dataclass("App30", fields, frozen=True)


KERNEL = '[log]\nlevel = "{level}"\n[bus]\ncapacity = 4096\n'


def _app_table(flip: int) -> str:
    lines = ["[app]"]
    for i in range(25):
        value = (str(i + flip), f'"s{i}{flip}"', "true" if flip else "false",
                 f'"{i + flip}s"', str(i / 2 + flip))[i % 5]
        lines.append(f"f{i:02d} = {value}")
    lines += ["[app.db]", f"port = {5432 + flip}", f'timeout = "{2 + flip}s"']
    return "\n".join(lines) + "\n"


def reload_p95(rounds: int, with_app: bool) -> dict[str, float]:
    """Validate+swap timings of ConfigCell.reload() with or without the 30-field app model."""
    model = _app_model() if with_app else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Config.toml"

        def write(flip: int) -> None:
            text = KERNEL.format(level=("info", "warn")[flip])
            path.write_text(text + (_app_table(flip) if with_app else ""))

        write(0)
        cfg: Config[Any] = Config.load(path, env={}, argv=[], app=model)
        cell = ConfigCell(cfg, path=path, env={}, argv=[])
        samples = []
        for i in range(rounds):
            write((i + 1) % 2)
            start = time.perf_counter()
            assert cell.reload()
            samples.append(time.perf_counter() - start)
        return {k: v * 1e3 for k, v in percentiles(samples).items()}


async def _recv_rate(messages: int, wrapped: bool) -> float:
    bus: Bus[int] = Bus(4096)
    rx = bus.subscribe()
    ctx: ChildContext[Any] = ChildContext("bench")
    done = asyncio.Event()

    async def consume() -> None:
        for _ in range(messages):
            if wrapped:
                await ctx.wait(rx.recv())
            else:
                await rx.recv()
        done.set()

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    start = time.perf_counter()
    sent = 0
    while sent < messages:
        burst = min(512, messages - sent)
        for i in range(burst):
            bus.publish(i)
        sent += burst
        await asyncio.sleep(0)
    await done.wait()
    elapsed = time.perf_counter() - start
    await task
    return elapsed / messages * 1e9  # ns per message


def wait_cost(messages: int, runs: int) -> dict[str, float]:
    """ns/message of ctx.wait(rx.recv()) and bare rx.recv(), interleaved runs, medians."""
    bare, wrapped = [], []
    for _ in range(runs):
        bare.append(asyncio.run(_recv_rate(messages, False)))
        wrapped.append(asyncio.run(_recv_rate(messages, True)))
    bare.sort()
    wrapped.sort()
    b, w = bare[len(bare) // 2], wrapped[len(wrapped) // 2]
    return {"bare_ns": b, "wrapped_ns": w, "ratio": w / b}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both parts, print the figures, optionally write JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.services", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    configure_logging(stream=io.StringIO())  # the reload's log lines are part of the cost
    rounds = 100 if args.quick else 500
    kernel_only = reload_p95(rounds, with_app=False)
    with_app = reload_p95(rounds, with_app=True)
    waits = wait_cost(20_000 if args.quick else 100_000, 3 if args.quick else 5)
    results: dict[str, Any] = {
        "reload_ms": {"kernel_only": kernel_only, "with_30_field_app": with_app,
                      "p95_added_ms": with_app["p95"] - kernel_only["p95"]},
        "ctx_wait": waits,
    }
    print(f"reload validate+swap p95: kernel only {kernel_only['p95']:.3f} ms, "
          f"with a 30-field app model {with_app['p95']:.3f} ms "
          f"(+{results['reload_ms']['p95_added_ms']:.3f} ms; target <= +1 ms)")
    print(f"per message: bare rx.recv() {waits['bare_ns']:.0f} ns, ctx.wait(rx.recv()) "
          f"{waits['wrapped_ns']:.0f} ns = {waits['ratio']:.2f}x (target <= 2x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
