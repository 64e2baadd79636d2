"""The implementation behind :mod:`ron_kernel.config` (the public facade documents it)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple

from . import _config
from ._config import (
    CONFIG_FLAG,
    FIELDS,
    SET_FLAG,
    AmnesiaConfig,
    BusConfig,
    Config,
    FederationConfig,
    LogConfig,
    M,
    ObservabilityConfig,
    PqConfig,
    ShutdownConfig,
    SupervisorConfig,
    WorkersConfig,
    format_duration,
    parse_duration,
)
from ._config_watch import FileWatcher, identify
from ._errors import ConfigError
from ._events import KernelEvent
from ._logging import get_logger
from ._signals import install_shared
from ._text import cap, printable, show_path
from ._tracing import kernel_span

if TYPE_CHECKING:
    from ._bus import Bus
    from ._metrics import Metrics

__all__ = [
    "AmnesiaConfig",
    "BusConfig",
    "ConfigCell",
    "ConfigStatus",
    "ExplainedValue",
    "FederationConfig",
    "LogConfig",
    "ObservabilityConfig",
    "PqConfig",
    "ReloadRecord",
    "ShutdownConfig",
    "SupervisorConfig",
    "WorkersConfig",
    "add_config_arguments",
    "config_argv",
    "explain",
    "format_duration",
    "parse_duration",
    "reload_class",
]

_log = get_logger("config")

ConfigCallback = Callable[[Config[Any], Config[Any]], None]


# ----------------------------------------------------------------------------- CLI integration

def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the config flags of CONFIG.MD §6 (plus the documented additions) to ``parser``.

    Values are kept as strings (default ``None``) so that :meth:`Config.load` validates all of
    them at once with the same messages as env and file values; pass them on with
    :func:`config_argv`::

        add_config_arguments(parser)
        ns = parser.parse_args()
        cfg = Config.load(argv=config_argv(ns))
    """
    group = parser.add_argument_group("configuration (highest precedence; see docs/CONFIG.md)")
    group.add_argument(CONFIG_FLAG, metavar="PATH", default=None,
                       help="config file (.toml or .json); default ./Config.toml or $RON_CONFIG")
    group.add_argument(SET_FLAG, metavar="KEY=VALUE", action="append", default=None,
                       help="set any key, kernel or app (app.db.pool_size=8); repeatable, "
                            "highest precedence")
    for fld in FIELDS.values():
        metavar = {"duration": "DUR", "int": "N", "addr": "HOST:PORT"}.get(fld.kind, "VALUE")
        if fld.choices:
            metavar = "{" + ",".join(fld.choices) + "}"
        elif fld.kind == "bool":
            metavar = "{on,off}" if fld.flag == "--amnesia" else "{true,false}"
        group.add_argument(fld.flag, metavar=metavar, default=None,
                           help=f"{fld.help} ({fld.key}, env {fld.env})")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def config_argv(namespace: argparse.Namespace) -> list[str]:
    """The config flags set in a namespace parsed with :func:`add_config_arguments`, as argv."""
    out: list[str] = []
    for flag in (CONFIG_FLAG, *(f.flag for f in FIELDS.values())):
        value = getattr(namespace, _dest(flag), None)
        if value is not None:
            out += [flag, str(value)]
    for setting in getattr(namespace, _dest(SET_FLAG), None) or ():
        out += [SET_FLAG, str(setting)]
    return out


class ExplainedValue(NamedTuple):
    """One row of :func:`explain`: a key, its (redacted) effective value and its source."""

    key: str
    value: str
    source: str


def explain(path: str | os.PathLike[str] | None = None, *,
            env: Mapping[str, str] | None = None,
            argv: Sequence[str] | None = None,
            app: type[Any] | None = None) -> list[ExplainedValue]:
    """The effective config with the source of every value, for ``ron-kernel config check``.

    Sources read ``default``, ``file:<path>[:<line>]``, ``env:RONK_X`` or ``cli:--flag``;
    secret values are redacted. With ``app``, the app keys (``app.*``) follow the kernel's.
    Raises :class:`~ron_kernel.errors.ConfigError` exactly as ``Config.load``.
    """
    resolved = _config.resolve(path, env=env, argv=argv, app=app)
    flat = resolved.config.flat()
    return [ExplainedValue(key, _config.show(key, flat[key]), resolved.sources[key])
            for key in flat]


def reload_class(key: str) -> str:
    """When a change of ``key`` takes effect: ``immediate``, ``next-restart`` or ``next-start``."""
    return FIELDS[key].reload


# ----------------------------------------------------------------------------- the cell

MIN_RELOAD_INTERVAL = 0.05
"""Requested reloads start at least this many seconds apart (at most 20 a second); a request
after a quiet moment starts at once. Requests arriving meanwhile coalesce."""

MAX_SHOWN_PROBLEMS = 10
"""A rejected reload's record keeps at most this many problems (the log has all of them)."""


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    """What the most recent reload did: :attr:`ConfigCell.last_reload`, ``/status``."""

    outcome: str
    """``applied``, ``unchanged`` or ``rejected``."""
    trigger: str
    """What asked for it: ``call`` (:meth:`ConfigCell.reload`), ``request``, ``SIGHUP``,
    ``file``, ``poll`` or ``directory`` -- joined with ``+`` when requests coalesced."""
    version: int
    """The config version in force afterwards."""
    requests: int
    """How many requests this one reload answered (more than one: they coalesced)."""
    at: float
    """When it finished (``time.time()``)."""
    latency_ms: float
    """From the start of reading to the end of the swap (or rejection)."""
    problems: tuple[str, ...] = ()
    """A rejected reload's problems (redacted, each capped; at most ``MAX_SHOWN_PROBLEMS``)."""

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready data."""
        return {"outcome": self.outcome, "trigger": self.trigger, "version": self.version,
                "requests": self.requests, "at": self.at, "latency_ms": self.latency_ms,
                "problems": list(self.problems)}


@dataclass(frozen=True, slots=True)
class ConfigStatus:
    """A :class:`ConfigCell` in one small record (:meth:`ConfigCell.status`, ``/status``)."""

    version: int
    """Version of the current snapshot."""
    path: str
    """The config file, as text (undecodable bytes shown as U+FFFD)."""
    watcher: str
    """:attr:`ConfigCell.watcher_state`."""
    reload_pending: bool
    """Whether a requested reload is queued or running."""
    reload_requests: int
    """Requests made through :meth:`ConfigCell.request_reload` (SIGHUP, the watcher, ...)."""
    reloads: int
    """Reloads performed (direct calls included); far fewer than requests in a storm."""
    last_reload: ReloadRecord | None
    """The most recent reload, ``None`` before the first."""

    def as_dict(self) -> dict[str, Any]:
        """The status as plain JSON-ready data (``last_reload`` as a dict or ``None``)."""
        return {"version": self.version, "path": self.path, "watcher": self.watcher,
                "reload_pending": self.reload_pending, "reload_requests": self.reload_requests,
                "reloads": self.reloads,
                "last_reload": None if self.last_reload is None else self.last_reload.as_dict()}


class _Pending:
    """The one queued reload that every request arriving before it starts joins."""

    __slots__ = ("future", "requests", "triggers")

    def __init__(self, future: asyncio.Future[bool]) -> None:
        self.future = future
        self.requests = 0
        self.triggers: dict[str, None] = {}

    @property
    def trigger(self) -> str:
        return "+".join(self.triggers)


class ConfigCell(Generic[M]):
    """Holds the current :class:`~ron_kernel.Config` and swaps it, whole, on a valid reload.

    A reload recomputes the effective config from the same sources the cell was given (file
    path, ``env`` and ``argv``; ``env=None`` means ``os.environ``), validates it, and either

    * swaps the snapshot at once (``version`` + 1), calls the subscribers, publishes
      ``KernelEvent.ConfigUpdated(version)`` on ``bus``, logs a redacted diff with the reload
      class of each changed key, and counts ``config_reloads_total{outcome="applied"}``; or
    * keeps the old snapshot untouched, logs every problem, counts
      ``config_reloads_total{outcome="rejected"}`` and publishes nothing.

    A reload whose effective config equals the current one changes nothing (no new version, no
    event; counted as ``outcome="unchanged"``). A file that had settings is never replaced by
    an empty one (or one with only comments) on reload: that is rejected, since it is what a
    half-written file looks like.

    Two ways in: :meth:`reload` reads and swaps synchronously, in the caller's thread (direct
    callers, tests); :meth:`request_reload` returns at once, reads and parses in a worker
    thread, swaps on the loop, and coalesces requests that arrive while one is pending -- the
    path of SIGHUP (:meth:`install_sighup`) and of the file watcher (:meth:`start_watching`).
    ``get()`` never blocks; the swap holds no lock. The cell never writes to disk (amnesia).
    """

    def __init__(self, config: Config[M], *, path: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None,
                 bus: Bus[Any] | None = None, metrics: Metrics | None = None,
                 app: type[M] | None = None) -> None:
        self._current: Config[M] = config
        # reloads revalidate the app keys with the same model (default: the snapshot's own)
        self._app: type[Any] | None = (
            app if app is not None else type(config.app) if config.app is not None else None)
        self._applied: asyncio.Future[None] | None = None
        self._path = path
        self._env = env
        self._argv = list(argv or ())
        self._bus = bus
        self._metrics = metrics
        self._counters = metrics.counters if metrics is not None else None
        self._subscribers: list[ConfigCallback] = []
        self._last_error: ConfigError | None = None
        self._last_reload: ReloadRecord | None = None
        problems: list[str] = []
        _, cli_path = _config.cli_layer(self._argv, problems)
        file, explicit, _how = _config.choose_file(path, self._environ(), cli_path)
        self._file = file
        # A file that existed at start is required from then on: deleting it must not silently
        # revert a running kernel to the defaults. Nor may emptying it, once it had settings.
        self._file_required = explicit or file.exists()
        self._parse_cache = _config.ParseCache()  # the first reload of these bytes: no parse
        self._had_settings = _config.file_has_settings(file, self._parse_cache)
        self._watcher = FileWatcher(file, self.request_reload, initial=identify(file))
        # request_reload's state: at most one reload runs, at most one more is queued
        self._pending: _Pending | None = None
        self._runner: asyncio.Task[None] | None = None
        self._running_reload = False
        self._last_requested_start = -MIN_RELOAD_INTERVAL  # loop time
        self._requests = 0
        self._reloads = 0
        # Every reload takes a sequence number when it starts reading; a result older than one
        # already applied (a direct reload() that finished first) is dropped, never applied.
        self._started_seq = 0
        self._finished_seq = 0
        if self._counters is not None:
            self._counters.config_version.set(value=config.version)

    def _environ(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    # ------------------------------------------------------------------ reading

    def get(self) -> Config[M]:
        """The current snapshot (one attribute read; never blocks)."""
        return self._current

    @property
    def version(self) -> int:
        """Version of the current snapshot."""
        return self._current.version

    @property
    def path(self) -> Path:
        """The config file this cell reloads from and watches (it may not exist)."""
        return self._file

    @property
    def last_error(self) -> ConfigError | None:
        """The error of the most recent rejected reload (``None`` after a successful one)."""
        return self._last_error

    @property
    def last_reload(self) -> ReloadRecord | None:
        """What the most recent reload did (``None`` before the first)."""
        return self._last_reload

    @property
    def watcher_state(self) -> str:
        """The file watcher: ``watching``, ``polling``, ``waiting_for_directory``, ``stopped``
        (not started, or cancelled) or ``failed: <reason>`` (it logs and keeps retrying)."""
        return self._watcher.state

    def status(self) -> ConfigStatus:
        """The version, file, watcher state and reload counters in one record (``/status``)."""
        return ConfigStatus(
            version=self._current.version, path=show_path(self._file),
            watcher=self._watcher.state,
            reload_pending=self._pending is not None or self._running_reload,
            reload_requests=self._requests, reloads=self._reloads,
            last_reload=self._last_reload)

    def subscribe(self, callback: ConfigCallback) -> Callable[[], None]:
        """Call ``callback(old, new)`` after every applied reload; returns an unsubscribe function.

        Callbacks run synchronously on the loop (or the thread calling :meth:`reload`), in
        order, right after the swap and before ``ConfigUpdated`` is published, so kernel parts
        (log level, amnesia, PQ posture) are updated by the time services see the event. An
        exception in a callback is logged and does not undo the reload.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def changes(self) -> AsyncIterator[Config[M]]:
        """Yield the snapshot after each applied reload, for as long as you iterate.

        Reloads that land while the consumer is busy are coalesced: it gets the latest one.
        ``async for cfg in cell.changes(): ...`` (children use ``ctx.config_changes()``).
        """
        loop = asyncio.get_running_loop()
        seen = self._current.version
        while True:
            if self._current.version == seen:
                if self._applied is None or self._applied.done():
                    self._applied = loop.create_future()
                await asyncio.shield(self._applied)
            current = self._current
            if current.version != seen:
                seen = current.version
                yield current

    # ------------------------------------------------------------------ reloading

    def reload(self, new: Config | None = None) -> bool:
        """Recompute (or take ``new``), validate, swap, synchronously; ``False`` when rejected.

        Returns ``True`` when the new config was applied or was identical to the current one.
        ``new.version`` is ignored: an applied snapshot always gets the current version + 1.
        Reads and parses the file in the calling thread (up to 1 MiB): from a coroutine prefer
        :meth:`request_reload`, which does that off the loop. Opens the span
        ``kernel.config.reload`` (attributes ``trigger``, ``outcome``) when tracing is on.
        """
        seq = self._start()
        started = time.perf_counter()
        with kernel_span("config", "reload", version=self._current.version,
                         trigger="call") as span:
            resolved: _config.Resolved | None = None
            error: ConfigError | None = None
            candidate: Config[Any] | None = None
            try:
                if new is None:
                    resolved = self._resolve(self._had_settings)
                    candidate = resolved.config
                else:
                    new.validate()
                    candidate = new
            except ConfigError as exc:
                error = exc
            outcome = self._finish(seq, candidate, resolved, error, started, "call", 1)
            if span is not None:
                span.set_attribute("outcome", outcome)
        return outcome != "rejected"

    def request_reload(self, trigger: str = "request") -> asyncio.Future[bool]:
        """Ask for a reload; returns at once with a future of its outcome (awaiting is optional).

        The file is read and parsed in a worker thread (``asyncio.to_thread``); only the swap,
        the subscribers and the publish run on the loop, so a 1 MiB file or a storm of
        requests does not stall it. Requests coalesce: while a reload is queued, every new
        request joins it; while one runs, requests queue exactly one more, which starts reading
        after the last of them -- so the newest content is always read, and 1,000 SIGHUPs cost
        a few dozen reloads; requested reloads start at least 50 ms apart (a lone request
        starts at once). The future resolves to what :meth:`reload` would return for the
        reload that answers this request (it is cancelled by :meth:`cancel_pending_reloads`).
        ``trigger`` names the requester in logs and in :attr:`last_reload`. Must be called in
        the loop's thread, with the loop running (``RuntimeError`` otherwise).
        """
        loop = asyncio.get_running_loop()
        self._requests += 1
        pending = self._pending
        if pending is None or pending.future.get_loop() is not loop:
            pending = self._pending = _Pending(loop.create_future())
        pending.requests += 1
        if trigger not in pending.triggers:
            pending.triggers[trigger] = None
            _log.info("config_reload_requested", trigger=trigger,
                      behind_running_reload=self._running_reload)
        runner = self._runner
        if runner is None or runner.done() or runner.get_loop() is not loop:
            self._runner = loop.create_task(self._run_requested(),
                                            name="ron-kernel-config-reload")
        return pending.future

    def cancel_pending_reloads(self) -> None:
        """Cancel the queued and the running requested reload (at shutdown); idempotent.

        Their futures are cancelled and nothing is swapped; a worker thread already reading
        finishes and its result is dropped. :meth:`reload` and later requests still work.
        """
        if self._pending is not None:
            self._pending.future.cancel()
            self._pending = None
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()

    async def _run_requested(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending is not None:
            wait = self._last_requested_start + MIN_RELOAD_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # requests keep joining the queued reload meanwhile
            pending = self._pending
            if pending is None:  # cancel_pending_reloads() while we waited
                return
            self._pending = None
            self._last_requested_start = loop.time()
            self._running_reload = True
            try:
                ok = await self._reload_off_loop(pending)
            except asyncio.CancelledError:
                pending.future.cancel()
                raise
            except Exception as exc:  # a bug must not end the trigger path: say so, go on
                _log.exception("config_reload_failed", trigger=pending.trigger,
                               error=printable(cap(repr(exc), 500)))
                ok = False
            finally:
                self._running_reload = False
            if not pending.future.done():
                pending.future.set_result(ok)

    async def _reload_off_loop(self, pending: _Pending) -> bool:
        seq = self._start()
        started = time.perf_counter()
        with kernel_span("config", "reload", version=self._current.version,
                         trigger=pending.trigger) as span:
            resolved: _config.Resolved | None = None
            error: ConfigError | None = None
            try:
                resolved = await asyncio.to_thread(self._resolve, self._had_settings)
            except ConfigError as exc:
                error = exc
            if seq < self._finished_seq:
                # a direct reload() started later and finished first: its result is newer
                _log.debug("config_reload_superseded", trigger=pending.trigger)
                return self._last_error is None
            outcome = self._finish(seq, resolved.config if resolved else None, resolved, error,
                                   started, pending.trigger, pending.requests)
            if span is not None:
                span.set_attribute("outcome", outcome)
        return outcome != "rejected"

    def _start(self) -> int:
        self._started_seq += 1
        return self._started_seq

    def _resolve(self, refuse_empty: bool) -> _config.Resolved:
        """Read, parse, merge and validate (blocking; runs in a worker thread when requested)."""
        return _config.resolve(self._path, env=self._environ(), argv=self._argv,
                               file=self._file, require_file=self._file_required,
                               refuse_empty=refuse_empty, cache=self._parse_cache,
                               app=self._app)

    def _finish(self, seq: int, candidate: Config[Any] | None, resolved: _config.Resolved | None,
                error: ConfigError | None, started: float, trigger: str, requests: int) -> str:
        """The swap (or the rejection), on the loop: nothing here reads a file or awaits."""
        self._finished_seq = seq
        self._reloads += 1
        old = self._current
        if error is not None or candidate is None:
            problems = error.problems if error is not None else ["no config"]
            self._last_error = error
            self._count("rejected", started)
            _log.error("config_reload_rejected", version=old.version, trigger=trigger,
                       problems=problems, kept="previous config")
            self._record("rejected", trigger, requests, started, problems)
            return "rejected"
        self._last_error = None
        if resolved is not None:
            self._had_settings = resolved.file_used and resolved.file_settings > 0
        changes = _config.diff(old.flat(), candidate.flat())
        if not changes:
            self._count("unchanged", started)
            _log.info("config_unchanged", version=old.version, trigger=trigger)
            self._record("unchanged", trigger, requests, started)
            return "unchanged"
        self._swap(old, _config.with_version(candidate, old.version + 1), changes, started,
                   trigger, requests)
        return "applied"

    def _adopt(self, config: Config[M], trigger: str = "parent") -> None:
        """Make ``config`` current with its own version (package-internal: worker processes).

        A worker applies the snapshot its parent validated, under the parent's version number,
        so ``ConfigUpdated(version)`` means the same reload in every process. Everything an
        applied reload does happens (subscribers, the event, the counters, the log line, the
        reload record), even when the values are unchanged: the version is what moves.
        """
        self._reloads += 1
        self._last_error = None
        old = self._current
        self._swap(old, config, _config.diff(old.flat(), config.flat()), time.perf_counter(),
                   trigger, 1)

    def _swap(self, old: Config[M], applied: Config[M], changes: list[dict[str, str]],
              started: float, trigger: str, requests: int) -> None:
        self._current = applied
        self._count("applied", started)
        waiting, self._applied = self._applied, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)
        if self._counters is not None:
            self._counters.config_version.set(value=applied.version)
        if self._metrics is not None and applied.amnesia.enabled != old.amnesia.enabled:
            self._metrics.set_amnesia(applied.amnesia.enabled)
        for callback in list(self._subscribers):
            try:
                callback(old, applied)
            except Exception as exc:  # a subscriber's bug must not undo a valid reload
                _log.exception("config_subscriber_failed", error=repr(exc))
        if self._bus is not None:
            self._bus.publish(KernelEvent.ConfigUpdated(version=applied.version))
        _log.info("config_updated", version=applied.version, trigger=trigger, changed=changes)
        self._record("applied", trigger, requests, started)

    def _count(self, outcome: str, started: float) -> None:
        if self._counters is not None:
            self._counters.config_reloads_total.inc(outcome)
            self._counters.request_latency_seconds.observe(
                "config_reload", value=time.perf_counter() - started)

    def _record(self, outcome: str, trigger: str, requests: int, started: float,
                problems: Sequence[str] = ()) -> None:
        self._last_reload = ReloadRecord(
            outcome=outcome, trigger=trigger, version=self._current.version, requests=requests,
            at=time.time(), latency_ms=round((time.perf_counter() - started) * 1000, 3),
            problems=tuple(printable(cap(p, 512)) for p in problems[:MAX_SHOWN_PROBLEMS]))

    # ------------------------------------------------------------------ triggers

    def install_sighup(self) -> Callable[[], None]:
        """Reload on SIGHUP through :meth:`request_reload`; returns a function removing it.

        Must be called from a coroutine in the main thread (it uses ``loop.add_signal_handler``;
        ``RuntimeError`` elsewhere). The handler only queues a request, so a storm of signals
        costs a few coalesced reloads. Several cells share the signal: two kernels in one
        process both reload on one SIGHUP. When the last one is removed, whatever SIGHUP handler
        was there before is back; a SIGHUP that handler deferred (``ron-kernel`` defers them
        while it starts) is taken over: one reload, once installed.
        """
        return install_shared(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self, sig: signal.Signals | None = None) -> None:
        self.request_reload("SIGHUP")

    def start_watching(self, *, polling: bool | None = None, quiet: float = 0.02,
                       poll_interval: float = 0.05) -> asyncio.Task[None]:
        """Start :meth:`watch` as a task in the running loop; cancel the task to stop."""
        _check_watch_args(quiet, poll_interval)
        return asyncio.get_running_loop().create_task(
            self.watch(polling=polling, quiet=quiet, poll_interval=poll_interval),
            name="ron-kernel-config-watch")

    async def watch(self, *, polling: bool | None = None, quiet: float = 0.02,
                    poll_interval: float = 0.05) -> None:
        """Reload (via :meth:`request_reload`) whenever the file's content changes; until cancelled.

        Reacts to any change in the file's directory and in the directory its symlinks lead to
        (watchfiles), or polls every ``poll_interval`` seconds when ``polling`` is true; then
        compares the resolved file's identity (realpath, stat, SHA-256 of the content), so an
        editor's rename, a Kubernetes ConfigMap's ``..data`` symlink swap and an in-place write
        are all seen, and a touch is not. It reads only once the file is stable (two looks
        ``quiet`` seconds apart agree). When the directory goes away the watcher polls until
        it is back; an unexpected error is logged and retried. :attr:`watcher_state` says
        which. Raises ``RuntimeError`` if this cell is already being watched, ``ValueError``
        for a negative ``quiet`` or a ``poll_interval`` that is not positive.
        """
        _check_watch_args(quiet, poll_interval)
        await self._watcher.run(polling=bool(polling), quiet=quiet, poll_interval=poll_interval)


def _check_watch_args(quiet: float, poll_interval: float) -> None:
    if not 0 <= quiet <= 60:
        raise ValueError(f"quiet must be from 0 to 60 seconds, got {quiet!r}")
    if not 0 < poll_interval <= 60:
        raise ValueError(f"poll_interval must be more than 0 and at most 60 seconds, "
                         f"got {poll_interval!r}")
