"""Apps the worker-process tests run in worker processes (imported there as ``workers_apps``).

Each function is an app factory: it receives the worker's own kernel and adds children, as a
``ron-kernel run --app`` factory does. Behaviour is chosen by the factory's name; knobs come
from the app config (``Knobs``) so the parent's validated snapshot drives them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Counter, Gauge

from ron_kernel import Config, KernelEvent
from ron_kernel.kernel import Kernel
from ron_kernel.supervisor import ChildContext

IN_WORKER = sys.argv[0].endswith("_worker_main.py")
"""True inside a worker process (``python -m ron_kernel._worker_main``)."""


@dataclass(frozen=True)
class Knobs:
    """The tests' app config (``[app]``): validated by the parent, rebuilt in each worker.

    ``label="refused-in-workers"`` validates in the parent but not in a worker: the code
    skew of a deploy caught half-way, which a reload must apply nowhere.
    """

    label: str = "plain"
    series: int = 0
    events: int = 0

    def __post_init__(self) -> None:
        if IN_WORKER and self.label == "refused-in-workers":
            raise ValueError("this worker runs other code: label refused")


Ctx = ChildContext[Config[Knobs]]


async def _idle(ctx: Ctx) -> None:
    ctx.ready()
    await ctx.shutdown.wait()


def ok(kernel: Kernel[Knobs]) -> None:
    """One child that reports ready and waits."""
    kernel.supervise("svc", _idle)


def versions(kernel: Kernel[Knobs]) -> None:
    """Reports every ConfigUpdated its children see as a Health event ``seen-v<N>-<label>``."""

    async def watch(ctx: Ctx) -> None:
        rx = ctx.bus.subscribe()
        ctx.ready()
        while True:
            event = await ctx.wait(rx.recv())
            if isinstance(event, KernelEvent.ConfigUpdated):
                label = ctx.config.app.label if ctx.config.app is not None else "none"
                ctx.bus.publish(KernelEvent.Health(service=f"seen-v{event.version}-{label}",
                                                   ok=True))
            if isinstance(event, KernelEvent.Shutdown):
                ctx.bus.publish(KernelEvent.Health(service="seen-shutdown", ok=True))

    kernel.supervise("watch", watch)


def factory_fails(kernel: Kernel[Knobs]) -> None:
    """The app factory raises: the worker cannot start."""
    raise RuntimeError("no database at db.invalid")


def exits_before_ready(kernel: Kernel[Knobs]) -> None:
    """A child ends the whole process with status 7 before anything is ready."""

    async def die(ctx: Ctx) -> None:
        await asyncio.sleep(0.05)
        os._exit(7)

    kernel.supervise("die", die)


def blocks_loop(kernel: Kernel[Knobs]) -> None:
    """Ready, then the worker's loop stops answering (a blocking call)."""

    async def hog(ctx: Ctx) -> None:
        ctx.ready()
        await asyncio.sleep(0.3)
        time.sleep(60)  # noqa: ASYNC251  (the point: a loop that stops answering)

    kernel.supervise("hog", hog)


def ignores_shutdown(kernel: Kernel[Knobs]) -> None:
    """Ready; at shutdown its loop blocks, so the worker never exits by itself."""

    async def stubborn(ctx: Ctx) -> None:
        ctx.ready()
        await ctx.shutdown.wait()
        time.sleep(60)  # noqa: ASYNC251  (the point: a worker that never drains)

    kernel.supervise("stubborn", stubborn)


def encode_raw(payload: bytes) -> bytes:
    """A well-framed payload (length prefix + bytes), whatever the bytes are."""
    return len(payload).to_bytes(4, "big") + payload


GARBAGE = {
    "oversize": b"\xff\xff\xff\xffnot a frame at all",
    "not-json": len(b"{nope").to_bytes(4, "big") + b"{nope",
    "not-object": encode_raw(b"[1, 2, 3]"),
    "unknown-type": encode_raw(b'{"t": "gimme-root"}'),
    "bad-shape": encode_raw(b'{"t": "ev", "e": "not a list"}'),
    "bad-event": encode_raw(b'{"t": "ev", "e": [["X", "svc", 1]]}'),
}
"""What ``garbage`` writes into its channel, by ``app.label``."""


def garbage(kernel: Kernel[Knobs]) -> None:
    """Ready, then writes ``GARBAGE[app.label]`` into the worker's channel."""
    channel = int(sys.argv[sys.argv.index("--channel") + 1])

    async def scribble(ctx: Ctx) -> None:
        ctx.ready()
        await asyncio.sleep(0.3)
        os.write(channel, GARBAGE[ctx.config.app.label])
        await ctx.shutdown.wait()

    kernel.supervise("scribble", scribble)


def flood(kernel: Kernel[Knobs]) -> None:
    """Publishes ``app.events`` Health events without yielding: more than the bus holds."""

    async def flooder(ctx: Ctx) -> None:
        ctx.ready()
        await asyncio.sleep(0.2)
        for n in range(ctx.config.app.events):
            ctx.bus.publish(KernelEvent.Health(service=f"f{n % 10}", ok=n % 2 == 0))
        ctx.bus.publish(KernelEvent.Health(service="flood-done", ok=True))
        await ctx.shutdown.wait()

    kernel.supervise("flooder", flooder)


def counting(kernel: Kernel[Knobs]) -> None:
    """``app_units_total`` counts 1 at start; ``app_series`` has ``app.series`` series."""
    units = Counter("app_units", "Work units done", registry=kernel.metrics.registry)
    gauge = Gauge("app_series", "Many series", ["n"], registry=kernel.metrics.registry)
    for n in range(kernel.config.app.series):
        gauge.labels(n=str(n)).set(n)

    async def work(ctx: Ctx) -> None:
        units.inc()
        ctx.ready()
        await ctx.shutdown.wait()

    kernel.supervise("work", work)


def asks_shutdown(kernel: Kernel[Knobs]) -> None:
    """A child asks the kernel to drain once ready (the whole service, parent included)."""

    async def done(ctx: Ctx) -> None:
        ctx.ready()
        await asyncio.sleep(0.2)
        ctx.request_shutdown("batch finished")
        await ctx.shutdown.wait()

    kernel.supervise("done", done)


async def _serve_pid(ctx: Ctx) -> None:
    async def pid(request: web.Request) -> web.Response:
        return web.Response(text=str(os.getpid()))

    app = web.Application()
    app.router.add_get("/pid", pid)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, ctx.listen_socket("web")).start()
        ctx.ready()
        await ctx.shutdown.wait()
    finally:
        await runner.cleanup()


def serves(kernel: Kernel[Knobs]) -> None:
    """An HTTP server on the parent's socket ``web``, answering ``GET /pid``."""
    kernel.supervise("http", _serve_pid)


def listens(kernel: Kernel[Knobs]) -> None:
    """Asks for socket ``web`` in the factory (the parent binds it once), then serves it."""
    kernel.listen("web", "127.0.0.1:0")
    kernel.supervise("http", _serve_pid)


def listens_everywhere(kernel: Kernel[Knobs]) -> None:
    """Asks for a socket on every interface without saying so: refused by the parent."""
    kernel.listen("web", "0.0.0.0:0")
    kernel.supervise("http", _serve_pid)


def child_crashes(kernel: Kernel[Knobs]) -> None:
    """A child that crashes once, then stays up (its crash reaches the parent's bus)."""
    crashed: list[bool] = []

    async def boom(ctx: Ctx) -> None:
        ctx.ready()
        if not crashed:
            crashed.append(True)
            await asyncio.sleep(0.2)
            raise ValueError("boom")
        await ctx.shutdown.wait()

    kernel.supervise("boom", boom)


def quarantines(kernel: Kernel[Knobs]) -> None:
    """``svc`` waits; ``bad`` always crashes (quarantined once past the restart cap)."""

    async def bad(ctx: Ctx) -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("always")

    kernel.supervise("svc", _idle)
    kernel.supervise("bad", bad)


def never_ready(kernel: Kernel[Knobs]) -> None:
    """``waits`` reports readiness and never gets there (nor crashes)."""

    async def waits(ctx: Ctx) -> None:
        ctx.ready(False)
        await ctx.shutdown.wait()

    kernel.supervise("waits", waits)
