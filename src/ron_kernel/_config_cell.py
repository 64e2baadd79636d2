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

from watchfiles import Change, awatch

from . import _config
from ._config import (
    CONFIG_FLAG,
    FIELDS,
    SET_FLAG,
    AmnesiaConfig,
    BusConfig,
    Config,
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
from ._errors import ConfigError
from ._events import KernelEvent
from ._logging import get_logger
from ._signals import install_handlers
from ._tracing import kernel_span

if TYPE_CHECKING:
    from ._bus import Bus
    from ._metrics import Metrics

__all__ = [
    "AmnesiaConfig",
    "BusConfig",
    "ConfigCell",
    "ExplainedValue",
    "LogConfig",
    "ObservabilityConfig",
    "PqConfig",
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

@dataclass(frozen=True, slots=True)
class _FileSig:
    mtime_ns: int
    size: int
    inode: int


class ConfigCell(Generic[M]):
    """Holds the current :class:`~ron_kernel.Config` and swaps it, whole, on a valid reload.

    ``reload()`` recomputes the effective config from the same sources the cell was given (file
    path, ``env`` and ``argv``; ``env=None`` means ``os.environ``), validates it, and either

    * swaps the snapshot at once (``version`` + 1), calls the subscribers, publishes
      ``KernelEvent.ConfigUpdated(version)`` on ``bus``, logs a redacted diff with the reload
      class of each changed key, and counts ``config_reloads_total{outcome="applied"}``; or
    * keeps the old snapshot untouched, logs every problem, counts
      ``config_reloads_total{outcome="rejected"}`` and publishes nothing.

    A reload whose effective config equals the current one changes nothing (no new version, no
    event; counted as ``outcome="unchanged"``). Triggers: a direct call, SIGHUP
    (:meth:`install_sighup`) and file changes (:meth:`start_watching`). ``get()`` never blocks;
    ``reload()`` is synchronous (it reads one small file) and holds no lock, so it is safe to call
    from the event loop. The cell never writes to disk (which amnesia mode requires).
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
        problems: list[str] = []
        _, cli_path = _config.cli_layer(self._argv, problems)
        file, explicit, _how = _config.choose_file(path, self._environ(), cli_path)
        self._file = file
        # A file that existed at start is required from then on: deleting it must not silently
        # revert a running kernel to the defaults.
        self._file_required = explicit or file.exists()
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

    def subscribe(self, callback: ConfigCallback) -> Callable[[], None]:
        """Call ``callback(old, new)`` after every applied reload; returns an unsubscribe function.

        Callbacks run synchronously, in order, right after the swap and before
        ``ConfigUpdated`` is published, so kernel parts (log level, amnesia, PQ posture) are
        updated by the time services see the event. An exception in a callback is logged and
        does not undo the reload.
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
        """Recompute (or take ``new``), validate, swap; ``False`` when rejected.

        Returns ``True`` when the new config was applied or was identical to the current one.
        ``new.version`` is ignored: an applied snapshot always gets the current version + 1.
        Opens the span ``kernel.config.reload`` (attribute ``outcome``) when tracing is on.
        """
        with kernel_span("config", "reload", version=self._current.version) as span:
            outcome = self._reload(new)
            if span is not None:
                span.set_attribute("outcome", outcome)
        return outcome != "rejected"

    def _reload(self, new: Config | None) -> str:
        started = time.perf_counter()
        old = self._current
        try:
            if new is None:
                candidate = _config.resolve(
                    self._path, env=self._environ(), argv=self._argv, file=self._file,
                    require_file=self._file_required, app=self._app).config
            else:
                new.validate()
                candidate = new
        except ConfigError as exc:
            self._last_error = exc
            self._count("rejected", started)
            _log.error("config_reload_rejected", version=old.version, problems=exc.problems,
                       kept="previous config")
            return "rejected"
        self._last_error = None
        changes = _config.diff(old.flat(), candidate.flat())
        if not changes:
            self._count("unchanged", started)
            _log.info("config_unchanged", version=old.version)
            return "unchanged"
        self._swap(old, _config.with_version(candidate, old.version + 1), changes, started)
        return "applied"

    def _adopt(self, config: Config[M]) -> None:
        """Make ``config`` current with its own version (package-internal: worker processes).

        A worker applies the snapshot its parent validated, under the parent's version number,
        so ``ConfigUpdated(version)`` means the same reload in every process. Everything an
        applied reload does happens (subscribers, the event, the counters, the log line), even
        when the values are unchanged: the version is what moves.
        """
        old = self._current
        self._swap(old, config, _config.diff(old.flat(), config.flat()), time.perf_counter())

    def _swap(self, old: Config[M], applied: Config[M], changes: list[dict[str, str]],
              started: float) -> None:
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
        _log.info("config_updated", version=applied.version, changed=changes)

    def _count(self, outcome: str, started: float) -> None:
        if self._counters is not None:
            self._counters.config_reloads_total.inc(outcome)
            self._counters.request_latency_seconds.observe(
                "config_reload", value=time.perf_counter() - started)

    # ------------------------------------------------------------------ triggers

    def install_sighup(self) -> Callable[[], None]:
        """Reload on SIGHUP, in the running loop; returns a function that removes the handler.

        Must be called from a coroutine (it uses ``loop.add_signal_handler``). Removing puts
        back whatever SIGHUP handler was there before.
        """
        return install_handlers(asyncio.get_running_loop(), (signal.SIGHUP,), self._on_sighup)

    def _on_sighup(self, sig: signal.Signals | None = None) -> None:
        _log.info("config_reload_requested", trigger="SIGHUP")
        self.reload()

    def start_watching(self, *, polling: bool | None = None, quiet: float = 0.02,
                       poll_interval: float = 0.05) -> asyncio.Task[None]:
        """Start :meth:`watch` as a task in the running loop; cancel the task to stop."""
        return asyncio.get_running_loop().create_task(
            self.watch(polling=polling, quiet=quiet, poll_interval=poll_interval),
            name="ron-kernel-config-watch")

    async def watch(self, *, polling: bool | None = None, quiet: float = 0.02,
                    poll_interval: float = 0.05) -> None:
        """Reload whenever the config file changes; runs until cancelled.

        Watches the file's parent directory (so an editor's write-to-temp-then-rename is seen)
        with watchfiles, or by polling ``(mtime, size, inode)`` every ``poll_interval`` seconds
        when ``polling`` is true (or the directory is missing). A reload happens only after the
        file has been quiet for ``quiet`` seconds, so a file being written in several steps is
        read once, complete; an invalid intermediate state is rejected anyway.
        """
        use_polling = bool(polling)
        if not self._file.parent.is_dir():
            use_polling = True
        if use_polling:
            await self._poll(quiet, poll_interval)
        else:
            await self._watchfiles(quiet)

    async def _watchfiles(self, quiet: float) -> None:
        target = self._file
        parent = str(target.parent)

        def only_target(change: Change, changed: str) -> bool:
            return os.path.basename(changed) == target.name and os.path.dirname(changed) == parent

        stop = asyncio.Event()
        step_ms = max(1, round(quiet * 1000))
        try:
            async for _changes in awatch(parent, watch_filter=only_target, step=step_ms,
                                         debounce=max(1000, step_ms * 10), recursive=False,
                                         stop_event=stop, rust_timeout=200,
                                         yield_on_timeout=False):
                _log.info("config_reload_requested", trigger="file", path=str(target))
                self.reload()
        finally:
            stop.set()

    def _signature(self) -> _FileSig | None:
        try:
            st = os.stat(self._file)
        except OSError:
            return None
        return _FileSig(st.st_mtime_ns, st.st_size, st.st_ino)

    async def _poll(self, quiet: float, interval: float) -> None:
        loop = asyncio.get_running_loop()
        settled = seen = self._signature()
        changed_at: float | None = None
        while True:
            await asyncio.sleep(interval)
            sig = self._signature()
            now = loop.time()
            if sig != seen:
                seen, changed_at = sig, now
                continue
            if sig != settled and changed_at is not None and now - changed_at >= quiet:
                settled, changed_at = sig, None
                _log.info("config_reload_requested", trigger="poll", path=str(self._file))
                self.reload()
