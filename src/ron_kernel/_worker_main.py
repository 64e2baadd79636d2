"""A worker process: ``python -m ron_kernel._worker_main --channel FD --parent PID --name N``.

Started by its parent's :class:`~ron_kernel._workers.WorkerSlot` (never by hand). In order:

1. Parent death: on Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (then a check that the parent
   did not die before that); everywhere a thread that watches ``getppid()`` and exits
   :data:`ORPHAN_GRACE` seconds after the parent is gone, plus the channel's EOF, which
   drains the worker within :data:`ORPHAN_DRAIN`. SIGINT and SIGHUP are ignored (a terminal's
   Ctrl-C and hang-up reach the whole process group: the parent decides for its workers);
   SIGTERM drains.
2. The ``init`` frame: the config snapshot (validated by the parent, rebuilt here, never read
   from a file), the app spec, the parent's ``sys.path``, the inherited listening sockets.
3. A kernel of its own (its bus, supervisor, health, metrics; no HTTP), the app factory called
   with it (``kernel.listen`` here asks the parent, which binds once for every worker).
4. The channel goes async: events of its children up (batched, bounded: a worker that floods
   loses its own events, counted), heartbeats answered from the loop, metrics rendered on
   request, config reloads prepared and committed with the parent's version number, Shutdown
   drained within the deadline the parent gives.

A failed start (import, factory, kernel start) is told to the parent first (``fatal``), then
the process exits with :data:`~ron_kernel._exitcodes.EXIT_WORKER_START`.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import inspect
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from ._appspec import load_app
from ._channel import FrameDecoder, ProtocolError, SyncChannel, encode
from ._config import Config
from ._errors import Closed, Lagged
from ._events import KernelEvent
from ._exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_WORKER_START
from ._exposition import TextWriter, add_labels
from ._kernel import Kernel
from ._logging import configure_from_config, get_logger, route_process_output, set_service
from ._snapshot import decode_config
from ._supervisor import known_names, resolve_child
from ._text import cap, printable
from ._workers import PROTOCOL

__all__ = ["ORPHAN_DRAIN", "ORPHAN_GRACE", "main"]

INIT_TIMEOUT: Final = 30.0
"""Seconds to wait for the parent's ``init`` frame."""

LISTEN_TIMEOUT: Final = 10.0
"""Seconds to wait for the parent to bind a socket the app factory asked for."""

ORPHAN_DRAIN: Final = 0.8
"""Drain deadline when the parent closed the channel (it is gone: be quick)."""

ORPHAN_GRACE: Final = 1.2
"""Seconds between noticing the parent is gone and a hard exit (the drain's bound)."""

WATCH_INTERVAL: Final = 0.2
"""How often the parent-watch thread compares ``getppid()`` with the parent's pid."""

EVENT_BATCH: Final = 1024
"""Events at most per frame."""

HIGH_WATER: Final = 1 << 20
"""Bytes queued towards the parent past which event batches are dropped (and counted)."""

_PR_SET_PDEATHSIG: Final = 1
_log = get_logger("worker")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker process; return its exit status."""
    parser = argparse.ArgumentParser(prog="python -m ron_kernel._worker_main")
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--name", default="worker")
    parser.add_argument("--no-pdeathsig", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_pdeathsig:
        set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != args.parent:
        return EXIT_FAILURE  # the parent died before we could ask to follow it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(args.parent,), daemon=True,
                     name="ron-kernel-parent-watch").start()
    set_service(f"ron-kernel/{args.name}")
    route_process_output()
    sock = socket.socket(fileno=args.channel)
    sock.setblocking(True)
    channel = SyncChannel(sock)
    try:
        init = channel.recv(INIT_TIMEOUT)
    except (OSError, EOFError, ProtocolError) as exc:
        _log.error("worker_init_failed", reason=f"no init frame from the parent: {exc}")
        return EXIT_FAILURE
    if init.get("t") != "init" or init.get("proto") != PROTOCOL:
        _log.error("worker_init_failed", reason=f"not an init frame of protocol {PROTOCOL}")
        return EXIT_FAILURE
    path = init.get("sys_path")
    if isinstance(path, list) and all(isinstance(p, str) for p in path):
        sys.path[:] = path
    try:
        config = decode_config(init.get("config"))
    except ValueError as exc:
        return _fatal(channel, f"the config snapshot was refused: {exc}", exc)
    configure_from_config(format=config.log.format, level=config.log.level,
                          amnesia=config.amnesia.enabled)
    try:
        factory = load_app(str(init.get("app")), what="worker app")
    except Exception as exc:  # ImportError as ValueError, or whatever the import raised
        return _fatal(channel, f"cannot load the app: {_describe(exc)}", exc)
    worker = _Worker(init, channel, config, factory)
    with asyncio.Runner(loop_factory=_loop_factory(str(init.get("loop")))) as runner:
        return runner.run(worker.run())


def set_parent_death_signal(sig: signal.Signals) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (``False`` elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    """The portable backstop: exit hard a moment after the parent is gone."""
    while True:
        time.sleep(WATCH_INTERVAL)
        if os.getppid() != parent:
            time.sleep(ORPHAN_GRACE)  # the loop's own drain (channel EOF) may finish first
            os._exit(EXIT_FAILURE)


def _loop_factory(flavor: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if flavor != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the parent ran uvloop, so it is installed
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _detail(exc: BaseException) -> str:
    try:
        return printable("".join(traceback.format_exception(exc))[-4096:])
    except Exception:
        return _describe(exc)


def _fatal(channel: SyncChannel, reason: str, exc: BaseException) -> int:
    """Tell the parent why the start failed (best effort), then the start-failure status."""
    _log.error("worker_start_failed", reason=reason, exc_info=exc)
    try:
        channel.send({"t": "fatal", "reason": cap(printable(reason), 1500),
                      "detail": _detail(exc)})
    except OSError:
        pass
    return EXIT_WORKER_START


class _WorkerKernel(Kernel[Any]):
    """The kernel of a worker process: no HTTP, no federation, no file watch, no SIGHUP of its
    own, and a ``request_shutdown`` that asks the parent (the whole service drains, not one
    worker)."""

    def __init__(self, worker: _Worker, config: Config[Any]) -> None:
        model = type(config.app) if config.app is not None else None
        super().__init__(config, app_config=model, env={}, argv=[], watch_config=False,
                         handle_sighup=False)
        self._worker = worker
        self._serve_http = False
        self._federation = None  # the parent federates: the workers' events reach its bus

    def request_shutdown(self, reason: str = "") -> None:
        """Ask the parent kernel to drain (every worker with it); alone before the link is up."""
        link = self._worker.link
        if link is None or link.gone:
            super().request_shutdown(reason)
            return
        link.send({"t": "stop", "reason": reason or "requested"})

    def supervise_workers(self, name: str, app: str | Callable[..., Any], *,
                          count: int | None = None, restart: Any = "permanent",
                          **options: Any) -> None:
        """Refused: worker processes do not start worker processes."""
        raise RuntimeError("a worker process cannot start worker processes "
                           f"(pool {name!r}); supervise workers in the parent")


class _Worker:
    """One worker process's life: kernel, app, link, drain."""

    def __init__(self, init: dict[str, Any], channel: SyncChannel, config: Config[Any],
                 factory: Callable[..., Any]) -> None:
        self.init = init
        self.name = str(init.get("name"))
        self.labels = f'pool="{init.get("pool")}",worker="{init.get("index")}"'
        self.writer = TextWriter({"pool": str(init.get("pool")), "worker": str(init.get("index"))})
        self.channel = channel
        self.config = config
        self.factory = factory
        self.link: _WorkerLink | None = None
        self._early: list[dict[str, Any]] = []
        self._asked = 0

    async def run(self) -> int:
        """From the factory to the exit status."""
        kernel = _WorkerKernel(self, self.config)
        sockets = self.init.get("sockets")
        for name, fd in (sockets.items() if isinstance(sockets, dict) else ()):
            kernel.listeners.adopt(name, socket.socket(fileno=int(fd)))
        kernel.listeners.set_binder(self._ask_parent)
        try:
            made = self.factory(kernel)
            if inspect.isawaitable(made):
                await made
        except Exception as exc:
            return _fatal(self.channel, f"the app factory failed: {_describe(exc)}", exc)
        kernel.listeners.set_binder(_too_late)
        link = self.link = await self._connect(kernel)
        relay = asyncio.get_running_loop().create_task(link.relay(kernel.bus.subscribe()),
                                                       name="ron-kernel-worker-relay")
        try:
            await kernel.start()
        except Exception as exc:
            _log.error("worker_start_failed", reason=_describe(exc), exc_info=exc)
            link.send({"t": "fatal", "reason": f"the kernel did not start: {_describe(exc)}",
                       "detail": _detail(exc)})
            await link.flush(within=1.0)
            return EXIT_WORKER_START
        # As `ron-kernel run` does: everything so far lives as long as the process; frozen, full
        # collections stop rescanning it (a gen-2 pass over it costs tens of ms of loop time).
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        drain = self.config.shutdown.drain_deadline.total_seconds()
        loop.add_signal_handler(signal.SIGTERM, link.stop, drain, "SIGTERM")
        link.send({"t": "up", "pid": os.getpid(), "version": kernel.config.version,
                   "ready": kernel.health.all_ready()})
        deadline = await link.stopped
        await kernel.shutdown(deadline)
        await asyncio.wait((relay,), timeout=0.5)  # the bus is closed: the relay sends the rest
        relay.cancel()
        await link.flush(within=0.5)
        link.close()
        return EXIT_OK

    async def _connect(self, kernel: _WorkerKernel) -> _WorkerLink:
        """Hand the channel to the loop; frames read so far go first."""
        ready, leftover = self.channel.detach()
        link = _WorkerLink(self, kernel)
        await asyncio.get_running_loop().create_unix_connection(lambda: link,
                                                                sock=self.channel.sock)
        for message in [*self._early, *ready]:
            link.dispatch(message)
        self._early.clear()
        if leftover:
            link.data_received(leftover)
        return link

    def _ask_parent(self, name: str, addr: str, allow_unspecified: bool) -> socket.socket:
        """``kernel.listen`` in the app factory: the parent binds, once, for every worker."""
        self._asked += 1
        rid = self._asked
        self.channel.send({"t": "listen", "id": rid, "name": name, "addr": addr,
                           "allow_unspecified": allow_unspecified})
        while True:
            try:
                message = self.channel.recv(LISTEN_TIMEOUT)
            except (TimeoutError, EOFError, ProtocolError) as exc:
                raise OSError(f"listen {name!r} addr {addr!r}: the parent did not answer "
                              f"({exc})") from exc
            if message.get("t") == "listening" and message.get("id") == rid:
                break
            self._early.append(message)
        if message.get("ok") is not True:
            error = str(message.get("error") or "refused by the parent")
            raise (OSError if message.get("kind") == "OSError" else ValueError)(error)
        fd = self.channel.take_fd()
        if fd is None:
            raise OSError(f"listen {name!r} addr {addr!r}: the parent passed no socket")
        return socket.socket(fileno=fd)


def _too_late(name: str, addr: str, allow_unspecified: bool) -> socket.socket:
    raise RuntimeError(f"kernel.listen({name!r}, {addr!r}) in a worker process: ask for a "
                       "socket the parent has not bound in the app factory (or bind it in the "
                       "parent with kernel.listen before supervise_workers)")


class _WorkerLink(asyncio.Protocol):
    """The worker's end of the channel once the loop owns it."""

    def __init__(self, worker: _Worker, kernel: _WorkerKernel) -> None:
        self.worker = worker
        self.kernel = kernel
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.stopped: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.gone = False
        self.lost = 0
        self.sent_ready: bool | None = None
        self._prepared: dict[int, Config[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except ProtocolError as exc:  # the parent never does this; do not guess, leave
            _log.error("worker_channel_broken", reason=str(exc))
            self.stop(ORPHAN_DRAIN, f"protocol error from the parent: {exc}")
            return
        for message in messages:
            self.dispatch(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.stop(ORPHAN_DRAIN, "the parent closed the channel")

    # ------------------------------------------------------------------ sending

    def send(self, message: dict[str, Any]) -> None:
        """Queue one frame to the parent (dropped once the channel is gone)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(encode(message))

    async def flush(self, within: float) -> None:
        """Wait (at most ``within`` seconds) until what was queued to the parent is written."""
        transport = self.transport
        deadline = time.monotonic() + within
        while True:
            if (transport is None or transport.is_closing()
                    or not transport.get_write_buffer_size() or time.monotonic() >= deadline):
                return
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """Close the channel."""
        if self.transport is not None:
            self.transport.close()

    def stop(self, deadline: float, reason: str) -> None:
        """Drain now, within ``deadline`` seconds (first request wins)."""
        if not self.stopped.done():
            _log.info("worker_stopping", reason=reason, deadline_s=round(deadline, 3))
            self.stopped.set_result(max(0.0, deadline))

    # ------------------------------------------------------------------ the relay

    async def relay(self, rx: Any) -> None:
        """The worker's events to the parent, batched; when behind, its own are dropped."""
        with rx:
            while True:
                try:
                    batch = await rx.recv_many(EVENT_BATCH)
                except Lagged as lag:
                    self.lost += lag.missed
                    continue
                except Closed:
                    break
                items: list[list[Any]] = []
                for event in batch:
                    if isinstance(event, KernelEvent.Health):
                        items.append(["H", event.service, event.ok])
                    elif isinstance(event, KernelEvent.ServiceCrashed):
                        items.append(["C", event.service, event.reason])
                if items:
                    transport = self.transport
                    if (transport is None or transport.is_closing()
                            or transport.get_write_buffer_size() > HIGH_WATER):
                        self.lost += len(items)
                    else:
                        self.send({"t": "ev", "e": items, "lost": self.lost})
                self.check_ready()

    def check_ready(self) -> None:
        """Tell the parent when this worker's readiness changed."""
        ok = self.kernel.health.all_ready()
        if ok != self.sent_ready:
            self.sent_ready = ok
            self.send({"t": "ready", "ok": ok})

    # ------------------------------------------------------------------ receiving

    def dispatch(self, message: dict[str, Any]) -> None:
        """Act on one frame from the parent."""
        kind = message.get("t")
        try:
            if kind == "ping":
                self._pong(message)
            elif kind == "scrape":
                self._spawn(self._scrape(int(message["id"])))
            elif kind == "prepare":
                self._prepare(int(message["id"]), message.get("config"))
            elif kind == "commit":
                self._commit(int(message["id"]))
            elif kind == "control":
                self._spawn(self._control(int(message["id"]), str(message["action"]),
                                          str(message["child"])))
            elif kind == "abort":
                self._prepared.pop(int(message["id"]), None)
            elif kind == "shutdown":
                deadline = message.get("deadline")
                self.stop(float(deadline) if isinstance(deadline, int | float)
                          else self.kernel.config.shutdown.drain_deadline.total_seconds(),
                          "the parent asked")
            else:
                _log.warning("worker_frame_ignored", kind=cap(printable(str(kind)), 40))
        except (KeyError, TypeError, ValueError) as exc:
            _log.warning("worker_frame_ignored", kind=cap(printable(str(kind)), 40),
                         reason=_describe(exc))

    def _pong(self, message: dict[str, Any]) -> None:
        children = self.kernel.supervisor.snapshot()  # the parent shows it in its tree
        ready = self.kernel.health.all_ready()
        self.sent_ready = ready
        self.send({"t": "pong", "n": message.get("n"), "ready": ready, "lost": self.lost,
                   "version": self.kernel.config.version, "children": children})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scrape(self, rid: int) -> None:
        metrics = self.kernel.metrics
        writer = self.worker.writer
        try:
            # the kernel's series on the loop (a few hundred at most), the app's (and the
            # process metrics) in a thread, each series carrying pool and worker
            text = add_labels(metrics.render_kernel_text(), self.worker.labels)
            text += await asyncio.to_thread(lambda: writer.render(metrics.collect_others()))
            self.send({"t": "metrics", "id": rid, "text": text})
        except Exception as exc:
            _log.error("worker_scrape_failed", reason=_describe(exc))
            self.send({"t": "metrics", "id": rid, "text": "", "error": _describe(exc)})

    async def _control(self, rid: int, action: str, child: str) -> None:
        """``release``/``restart`` of one of this worker's children, asked through the parent's
        ``POST /control/<action>/<pool>/<i>/<child>``; answered as that route answers."""
        root = self.kernel.supervisor
        found = resolve_child(root, child)
        reply: dict[str, Any] = {"t": "controlled", "id": rid}
        if found is None:
            names = known_names(root)
            self.send({**reply, "outcome": "not_found", "known": names[:200],
                       "error": f"no child named {cap(printable(child), 200)!r}"})
            return
        sup, name = found
        outcome, error = "ok", None
        try:
            if action == "release":
                if not sup.release(name):
                    outcome, error = "conflict", f"child {name!r} is not quarantined"
            elif action == "restart":
                await sup.restart(name)
            else:
                outcome, error = "unavailable", f"unknown action {cap(printable(action), 40)!r}"
        except RuntimeError as exc:  # a restart already running, a stopped supervisor
            outcome, error = "conflict", str(exc)
        except KeyError:  # the child went away between the lookup and the action
            outcome, error = "not_found", f"no child named {name!r}"
        info = sup.snapshot().get(name)
        _log.info("control_action", action=action, outcome=outcome,
                  child=cap(printable(child), 200), via="parent")
        self.send({**reply, "outcome": outcome, "error": error,
                   "state": info["state"] if info is not None else None})

    def _prepare(self, rid: int, data: Any) -> None:
        try:
            config = decode_config(data)
        except ValueError as exc:
            self.send({"t": "prepared", "id": rid, "ok": False,
                       "error": cap(printable(str(exc)), 1500)})
            return
        self._prepared[rid] = config
        self.send({"t": "prepared", "id": rid, "ok": True})

    def _commit(self, rid: int) -> None:
        config = self._prepared.pop(rid, None)
        if config is None:
            return
        for older in [r for r in self._prepared if r < rid]:
            del self._prepared[older]
        self.kernel.config_cell._adopt(config)


if __name__ == "__main__":
    sys.exit(main())
