"""Config: the schema, duration parsing, the four sources, their merge and fail-closed validation.

The pipeline reads top to bottom, one small step each (see docs/CONFIG.md):

    defaults -> file layer -> env layer -> CLI layer      each: {key: (raw value, source)}
             -> merge (later layers win)                   -> {key: (raw value, source)}
             -> coerce every value with its field's parser -> typed values, or problems
             -> cross-field rules                          -> more problems
             -> one immutable ``Config``, or one ``ConfigError`` listing every problem

Every value keeps the name of its source (``default``, ``file:<path>``, ``env:RONK_X``,
``cli:--flag``), so an error says where the bad value came from and ``explain`` can show where
each effective value came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.util
import json
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, NamedTuple, overload
from urllib.parse import urlsplit

from typing_extensions import TypeVar

from ._addr import binds_every_interface, parse_addr
from ._app_config import flatten as flatten_app
from ._app_config import validate as validate_app
from ._bus import MAX_CAPACITY
from ._duration import MAX_DURATION, format_duration, parse_duration
from ._errors import ConfigError
from ._health import PQ_MODES
from ._logging import get_logger
from ._redact import REDACTED, is_secret_name, redact_text
from ._supervisor_policy import DEFAULT_RESET_AFTER
from ._text import show_path

__all__ = [
    "AmnesiaConfig",
    "BusConfig",
    "Config",
    "FederationConfig",
    "LogConfig",
    "ObservabilityConfig",
    "PqConfig",
    "ShutdownConfig",
    "SupervisorConfig",
    "WorkersConfig",
    "format_duration",
    "parse_duration",
]

_log = get_logger("config")

DEFAULT_FILE = "Config.toml"
CONFIG_ENV = "RON_CONFIG"
CONFIG_FLAG = "--config"
SET_FLAG = "--set"
APP = "app"
APP_ENV_PREFIX = "RONK_APP__"
# RUNBOOK §2 names this variable; it is accepted as a deprecated alias of RONK_OBS_ADDR.
METRICS_ADDR_ALIAS = "RON_KERNEL_METRICS_ADDR"

MAX_BUS_CAPACITY = MAX_CAPACITY  # one limit: the bus's own
MAX_RESTART_CAP = 10_000
MAX_WORKERS = 1024
MAX_FILE_BYTES = 1 << 20
# Below 10 ms, timer jitter and GC pauses would count as blocks; above 1 h is a typo.
MIN_LOOP_BLOCK_THRESHOLD = timedelta(milliseconds=10)
MAX_LOOP_BLOCK_THRESHOLD = timedelta(hours=1)
# A control token is a bearer secret in an HTTP header: long enough not to be guessed, short and
# plain enough to be one header value.
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 256
_TOKEN = re.compile(r"[\x21-\x7e]+")

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")

# Reload classes (CONFIG.MD §5): when a changed value takes effect.
IMMEDIATE = "immediate"          # the kernel applies it as soon as ConfigUpdated is published
NEXT_RESTART = "next-restart"    # supervisor policy: used by the next (re)start of a child
NEXT_START = "next-start"        # fixed for the life of the kernel: applies when it next starts



# ----------------------------------------------------------------------------- the schema


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorConfig:
    """``[supervisor]``: restart backoff and the restart budget (CONFIG.MD §3)."""

    min_backoff: timedelta = timedelta(milliseconds=100)
    max_backoff: timedelta = timedelta(seconds=30)
    restart_cap: int = 5
    restart_window: timedelta = timedelta(seconds=60)
    reset_after: timedelta = timedelta(seconds=DEFAULT_RESET_AFTER)
    quarantine_cooldown: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class BusConfig:
    """``[bus]``: the bounded broadcast buffer."""

    capacity: int = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class AmnesiaConfig:
    """``[amnesia]``: the global amnesia flag (services must honour it)."""

    enabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PqConfig:
    """``[pq]``: post-quantum posture, pass-through only (QUANTUM.MD §4)."""

    mode: str = "off"
    require_pq: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilityConfig:
    """``[observability]``: the HTTP endpoints, loop-health threshold and debug endpoints.

    ``expose_http``/``addr``: whether and where /metrics, /healthz, /readyz are served.
    ``loop_block_threshold``: how long the event loop may run no callback before the
    watchdog reports it blocked (10ms..1h). ``debug_endpoints``: serve ``GET /debug/tasks``.
    ``control_token``: the Bearer token of ``POST /control/*``; empty (the default) turns the
    control routes off (they answer 404).
    """

    expose_http: bool = False
    addr: str = "127.0.0.1:0"
    loop_block_threshold: timedelta = timedelta(milliseconds=100)
    debug_endpoints: bool = False
    # Secret: redacted by name everywhere, and kept out of repr() so no traceback shows it.
    control_token: str = field(default="", repr=False)

    @property
    def host_port(self) -> tuple[str, int]:
        """``addr`` split into ``(host, port)``; ``ValueError`` if it does not parse."""
        host, port = parse_addr(self.addr)
        return host, port


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """``[log]``: log format (``json`` or ``text``) and level (``trace`` .. ``error``)."""

    format: str = "json"
    level: str = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownConfig:
    """``[shutdown]``: how long a graceful shutdown waits before cancelling stragglers."""

    drain_deadline: timedelta = timedelta(seconds=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkersConfig:
    """``[workers]``: worker processes running the app (docs/WORKERS.md); 0 = this process."""

    count: int = 0
    heartbeat_timeout: timedelta = timedelta(seconds=10)
    min_ready: int = 0  # 0: every worker
MAX_NODE_CHARS = 64
MAX_FED_BUFFER = 65_536
_SUBJECT_TOKEN_BAD = re.compile(r"[.*>\s\x00-\x1f\x7f]")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
NATS_EXTRA_HINT = "pip install 'ron-kernel[nats]'"


def check_subject_token(value: str) -> str | None:
    """Why ``value`` cannot be one token of a NATS subject (a node or prefix), or ``None``."""
    if not value:
        return "empty"
    if len(value) > MAX_NODE_CHARS:
        return f"longer than {MAX_NODE_CHARS} characters"
    bad = _SUBJECT_TOKEN_BAD.search(value)
    if bad is not None:
        char = bad.group()
        shown = repr(char) if char in ".*>" else "whitespace or a control character"
        return f"contains {shown}"
    return None


def check_nats_url(value: str) -> str | None:
    """Why ``value`` is not a NATS server URL (or a comma-separated list), or ``None``.

    ``nats://host:4222``, ``tls://user:pass@host``; the port defaults to 4222. The text of the
    answer never contains the URL's credentials.
    """
    for part in value.split(","):
        url = part.strip()
        if not url:
            return "an empty server in the list"
        try:
            parsed = urlsplit(url)
            port = parsed.port
        except ValueError as exc:
            return f"not a URL ({redact_text(str(exc))})"
        if parsed.scheme not in NATS_SCHEMES:
            return (f"scheme {parsed.scheme!r} is not one of "
                    + ", ".join(f"{s}://" for s in NATS_SCHEMES))
        if not parsed.hostname:
            return "no host"
        if port == 0:
            return "port 0"
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
            return "a path, query or fragment (a NATS URL is scheme://[user:pass@]host[:port])"
    return None


def nats_installed() -> bool:
    """Whether the ``nats`` extra (nats-py) can be imported."""
    try:
        return importlib.util.find_spec("nats") is not None
    except (ImportError, ValueError):
        return False


def default_node() -> str:
    """The default ``federation.node``: this host's name up to its first dot (``web-1``)."""
    name = socket.gethostname().split(".", 1)[0].strip()
    name = _SUBJECT_TOKEN_BAD.sub("-", name)[:MAX_NODE_CHARS]
    return name or "localhost"


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationConfig:
    """``[federation]``: KernelEvents across a fleet over core NATS (the ``nats`` extra).

    Off while ``nats_url`` is empty. Events go out on ``<prefix>.<node>.<topic>``; see
    docs/FEDERATION.md.
    """

    nats_url: str = ""
    node: str = field(default_factory=default_node)
    prefix: str = "ron"
    required: bool = False
    buffer: int = 1024


_SECTIONS: dict[str, type[Any]] = {
    "supervisor": SupervisorConfig,
    "bus": BusConfig,
    "amnesia": AmnesiaConfig,
    "pq": PqConfig,
    "observability": ObservabilityConfig,
    "log": LogConfig,
    "shutdown": ShutdownConfig,
    "workers": WorkersConfig,
    "federation": FederationConfig,
}


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    kind: str  # duration | int | bool | enum | addr | url | secret | subject
    env: str
    flag: str
    reload: str
    expected: str
    choices: tuple[str, ...] = ()
    lo: Any = None
    hi: Any = None
    help: str = ""


def _dur(key: str, env: str, flag: str, reload: str, lo: timedelta, help: str,
         hi: timedelta = MAX_DURATION) -> _Field:
    low = ("0s or more" if lo == timedelta(0) else "more than 0s" if lo == _TINY
           else f"at least {format_duration(lo)}")
    return _Field(key, "duration", env, flag, reload,
                  f"a duration ({low}, at most {format_duration(hi)}) such as '100ms', '1.5s' "
                  "or '1h30m'", lo=lo, hi=hi, help=help)


_BOOL_WORDS = "true|false (also on|off, yes|no, 1|0)"
_TINY = timedelta(microseconds=1)

FIELDS: dict[str, _Field] = {f.key: f for f in (
    _dur("supervisor.min_backoff", "RONK_SUP_MIN", "--sup-min-backoff", NEXT_RESTART,
         timedelta(0), "restart backoff lower bound"),
    _dur("supervisor.max_backoff", "RONK_SUP_MAX", "--sup-max-backoff", NEXT_RESTART,
         _TINY, "restart backoff cap"),
    _Field("supervisor.restart_cap", "int", "RONK_SUP_RESTART_CAP", "--sup-restart-cap",
           NEXT_RESTART, f"an integer from 1 to {MAX_RESTART_CAP}", lo=1, hi=MAX_RESTART_CAP,
           help="restarts allowed per window before quarantine"),
    _dur("supervisor.restart_window", "RONK_SUP_WINDOW", "--sup-restart-window", NEXT_RESTART,
         _TINY, "window of restart_cap"),
    _dur("supervisor.reset_after", "RONK_SUP_RESET_AFTER", "--sup-reset-after", NEXT_RESTART,
         _TINY, "a child up this long has its backoff attempt counter reset"),
    _Field("supervisor.quarantine_cooldown", "duration", "RONK_SUP_QUARANTINE_COOLDOWN",
           "--sup-quarantine-cooldown", NEXT_RESTART,
           "a duration from 0s (off) to 1h such as '30s' or '5m'", lo=timedelta(0),
           hi=timedelta(hours=1),
           help="a quarantined child gets a probe start after this (0s: never)"),
    _Field("bus.capacity", "int", "RONK_BUS_CAPACITY", "--bus-capacity", NEXT_START,
           f"an integer from 1 to {MAX_BUS_CAPACITY}", lo=1, hi=MAX_BUS_CAPACITY,
           help="bounded broadcast buffer"),
    _Field("amnesia.enabled", "bool", "RONK_AMNESIA", "--amnesia", IMMEDIATE,
           f"a boolean: {_BOOL_WORDS}", help="amnesia mode on|off"),
    _Field("pq.mode", "enum", "RONK_PQ_MODE", "--pq", IMMEDIATE,
           "one of off, hybrid, pq-only", choices=PQ_MODES, help="PQ posture (pass-through)"),
    _Field("pq.require_pq", "bool", "RONK_PQ_REQUIRE", "--pq-require", IMMEDIATE,
           f"a boolean: {_BOOL_WORDS}", help="degrade readiness when peers are classical"),
    _Field("observability.expose_http", "bool", "RONK_OBS_HTTP", "--obs-http", NEXT_START,
           f"a boolean: {_BOOL_WORDS}", help="serve /metrics, /healthz, /readyz"),
    _Field("observability.addr", "addr", "RONK_OBS_ADDR", "--obs-addr", NEXT_START,
           "host:port such as 127.0.0.1:9909 ([::1]:9909 for IPv6)",
           help="bind address of the observability endpoints"),
    _dur("observability.loop_block_threshold", "RONK_OBS_LOOP_BLOCK_THRESHOLD",
         "--obs-loop-block-threshold", IMMEDIATE, MIN_LOOP_BLOCK_THRESHOLD,
         "the event loop counts as blocked after running no callback this long",
         hi=MAX_LOOP_BLOCK_THRESHOLD),
    _Field("observability.debug_endpoints", "bool", "RONK_OBS_DEBUG_ENDPOINTS",
           "--obs-debug-endpoints", NEXT_START, f"a boolean: {_BOOL_WORDS}",
           help="serve GET /debug/tasks (loopback peers only)"),
    _Field("observability.control_token", "secret", "RONK_CONTROL_TOKEN",
           "--obs-control-token", IMMEDIATE,
           f"empty (control routes off) or {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} printable "
           "ASCII characters without spaces",
           help="Bearer token of POST /control/*; empty turns them off (prefer the env var)"),
    _Field("log.format", "enum", "RONK_LOG_FORMAT", "--log-format", IMMEDIATE,
           "one of json, text", choices=LOG_FORMATS, help="log format"),
    _Field("log.level", "enum", "RONK_LOG_LEVEL", "--log-level", IMMEDIATE,
           "one of trace, debug, info, warn, error", choices=LOG_LEVELS, help="log level"),
    _dur("shutdown.drain_deadline", "RONK_DRAIN_DEADLINE", "--drain-deadline", IMMEDIATE,
         _TINY, "graceful shutdown deadline before stragglers are cancelled"),
    _Field("workers.count", "int", "RONK_WORKERS", "--workers", NEXT_START,
           f"an integer from 0 (no worker processes) to {MAX_WORKERS}", lo=0, hi=MAX_WORKERS,
           help="worker processes that run the app (0: run it in this process)"),
    _Field("workers.heartbeat_timeout", "duration", "RONK_WORKERS_HEARTBEAT_TIMEOUT",
           "--workers-heartbeat-timeout", IMMEDIATE,
           "a duration from 100ms to 24h such as '10s'", lo=timedelta(milliseconds=100),
           hi=MAX_DURATION, help="a worker whose loop does not answer this long is killed"),
    _Field("workers.min_ready", "int", "RONK_WORKERS_MIN_READY", "--workers-min-ready",
           IMMEDIATE, f"an integer from 0 (every worker) to {MAX_WORKERS}", lo=0,
           hi=MAX_WORKERS, help="ready workers needed for readiness (0: every worker)"),
    _Field("federation.nats_url", "url", "RONK_FED_NATS_URL", "--fed-nats-url", NEXT_START,
           "empty (off) or a NATS URL such as nats://127.0.0.1:4222 "
           "(comma-separated for several servers)",
           help="publish KernelEvents to NATS and follow the fleet (needs the nats extra)"),
    _Field("federation.node", "subject", "RONK_FED_NODE", "--fed-node", NEXT_START,
           f"a node name of 1 to {MAX_NODE_CHARS} characters without '.', '*', '>' or "
           "whitespace such as web-1", help="this kernel's name in the fleet (default: hostname)"),
    _Field("federation.prefix", "subject", "RONK_FED_PREFIX", "--fed-prefix", NEXT_START,
           f"a subject prefix of 1 to {MAX_NODE_CHARS} characters without '.', '*', '>' or "
           "whitespace such as ron", help="first token of every federation subject"),
    _Field("federation.required", "bool", "RONK_FED_REQUIRED", "--fed-required", NEXT_START,
           f"a boolean: {_BOOL_WORDS}",
           help="fail the start when NATS cannot be reached (default: start and retry)"),
    _Field("federation.buffer", "int", "RONK_FED_BUFFER", "--fed-buffer", NEXT_START,
           f"an integer from 1 to {MAX_FED_BUFFER}", lo=1, hi=MAX_FED_BUFFER,
           help="outbound events held while NATS is slow or away (oldest dropped beyond)"),
)}
_BY_ENV = {f.env: f for f in FIELDS.values()}
_BY_FLAG = {f.flag: f for f in FIELDS.values()}
KNOWN_ENV = (*_BY_ENV, CONFIG_ENV, METRICS_ADDR_ALIAS)
KNOWN_FLAGS = (CONFIG_FLAG, SET_FLAG, *_BY_FLAG)

M = TypeVar("M", default=None)
"""The app config model of a ``Config`` (``None`` when there is none)."""
A = TypeVar("A")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(Generic[M]):
    """The kernel's configuration: an immutable snapshot (CONFIG.MD §3 plus QUANTUM.MD §4).

    ``Config()`` holds the built-in defaults; :meth:`load` merges, highest first, CLI flags >
    ``RONK_*`` environment > TOML/JSON file > defaults and validates the result, raising
    :class:`~ron_kernel.errors.ConfigError` that lists every problem with its key and source::

        cfg = Config.load("Config.toml", env=os.environ, argv=["--bus-capacity", "8192"])
        cfg.bus.capacity                 # 8192
        cfg.supervisor.min_backoff       # datetime.timedelta(microseconds=100000)

    Sections: ``supervisor``, ``bus``, ``amnesia``, ``pq``, ``observability``, ``log``,
    ``shutdown``, ``workers`` and ``federation``. ``version`` is 1 for a first load (and for
    ``Config()``); each reload applied by :class:`ron_kernel.config.ConfigCell` adds one.
    Instances are frozen and hashable; build a changed copy with :meth:`from_mapping`.

    Your service's own settings live in the same layers: give a pydantic v2 model or a
    dataclass as ``app=`` and ``cfg.app`` is an instance of it, filled from the file's
    ``[app]`` table, ``RONK_APP__<FIELD>`` variables (``__`` nests: ``RONK_APP__DB__POOL_SIZE``)
    and ``--set app.<key>=<value>`` flags, validated together with the kernel's keys::

        @dataclass(frozen=True)
        class AppConfig:
            port: int = 8080
            timeout: timedelta = timedelta(seconds=1)   # accepts "250ms", "1h30m"

        cfg = Config.load(argv=["--set", "app.port=9000"], app=AppConfig)
        cfg.app.port                     # 9000
    """

    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    amnesia: AmnesiaConfig = field(default_factory=AmnesiaConfig)
    pq: PqConfig = field(default_factory=PqConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    log: LogConfig = field(default_factory=LogConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    version: int = 1
    app: M = field(default=None, hash=False)  # type: ignore[assignment]

    @overload
    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None,
             app: None = None) -> Config[None]: ...

    @overload
    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None,
             app: type[A]) -> Config[A]: ...

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None,
             app: type[Any] | None = None) -> Config[Any]:
        """Build the effective config from defaults < file < environment < ``argv``, validated.

        The file is ``--config`` in ``argv``, else ``path``, else ``$RON_CONFIG``, else
        ``Config.toml`` in the working directory; relative paths are resolved against the working
        directory. ``.toml`` files are read as TOML, ``.json`` as JSON. A missing default file
        means defaults (logged); a file named explicitly but missing is an error. ``argv`` holds
        flags only (``["--bus-capacity", "8"]``); ``env`` defaults to ``os.environ``. An unknown
        flag or ``RONK_*`` variable is an error. ``app`` is your settings' model (see the class
        docstring); without it an ``[app]`` table or ``RONK_APP__*`` variable is an error.
        Raises :class:`~ron_kernel.errors.ConfigError` listing every problem.
        """
        return resolve(path, env=env, argv=argv, app=app).config

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: Config[Any] | None = None,
                     source: str = "api", app: type[Any] | None = None) -> Config[Any]:
        """Return ``base`` (default: the defaults) with the sections of ``data`` applied.

        ``data`` has the shape of a config file (``{"bus": {"capacity": 8}}``); values are
        checked exactly as a file's are (durations as strings like ``"5s"``, or ``timedelta``).
        Raises :class:`~ron_kernel.errors.ConfigError` naming ``source`` for each problem.
        ``app`` is the app model (default: the type of ``base.app``).
        """
        if app is None and base is not None and base.app is not None:
            app = type(base.app)
        layers = [_flat_layer(base, "default" if base is None else "base")]
        problems: list[str] = []
        layers.append(_mapping_layer(data, source, problems))
        return _build(layers, problems, version=1 if base is None else base.version,
                      app=app)[0]

    def validate(self) -> None:
        """Check every value and rule again; raise ``ConfigError`` listing every problem.

        ``load`` and ``from_mapping`` already validate; this is for configs built directly
        (``Config(bus=BusConfig(capacity=0))``).
        """
        app = type(self.app) if self.app is not None else None
        _build([_flat_layer(self, "value")], [], version=self.version, app=app)

    def flat(self) -> dict[str, Any]:
        """Every value by dotted key (``{"bus.capacity": 4096, "app.port": 8080, ...}``).

        ``version`` is excluded; app keys are prefixed ``app.``.
        """
        out = {key: getattr(getattr(self, key.split(".")[0]), key.split(".")[1])
               for key in FIELDS}
        out.update({f"{APP}.{key}": value for key, value in flatten_app(self.app).items()})
        return out


# ----------------------------------------------------------------------------- sources

class Raw(NamedTuple):
    """One raw value and where it came from."""

    value: Any
    source: str
    text: bool  # a string to parse (env var, CLI flag) rather than a typed value


Layer = dict[str, Raw]


def _flat_layer(cfg: Config[Any] | None, source: str) -> Layer:
    values = (cfg if cfg is not None else _DEFAULTS).flat()
    return {key: Raw(value, source, False) for key, value in values.items()}


@functools.cache
def _default_layer() -> Layer:
    # the defaults never change: flatten them once (layers are only read, never mutated)
    return _flat_layer(None, "default")


def is_secret(key: str) -> bool:
    """Whether a key's value must never be shown (the one rule of ``ron_kernel._redact``)."""
    return is_secret_name(key)


_SHOW_DEPTH = 6  # deeper nesting is elided: the text is cut at 80 characters anyway


def show(key: str, value: Any, _depth: int = 0) -> str:
    """A short, redacted rendering of a value for messages and diffs."""
    if is_secret(key):
        return REDACTED
    if isinstance(value, timedelta):
        try:
            return format_duration(value)
        except ValueError:
            return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple) and _depth >= _SHOW_DEPTH:
        # a file nested hundreds deep must give a ConfigError, not a RecursionError
        text = "{...}" if isinstance(value, Mapping) else "[...]"
    elif isinstance(value, Mapping):
        # an unknown table may hold secrets under any name: redact key by key
        text = "{" + ", ".join(f"{k} = {show(str(k), v, _depth + 1)}"
                               for k, v in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show(key, v, _depth + 1) for v in value) + "]"
    else:
        if isinstance(value, os.PathLike):  # an app model's Path field: the path, as typed
            value = os.fspath(value)
        text = repr(redact_text(value)) if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(key: str, value: Any, source: str, reason: str, expected: str) -> str:
    return f"{key} = {show(key, value)} (from {source}): {reason}; expected {expected}"


def _file_problem(source: str, reason: str, expected: str) -> str:
    return f"config file (from {source}): {reason}; expected {expected}"


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _flatten_into(layer: Layer, prefix: str, body: Mapping[str, Any], source: str,
                  lines: Mapping[str, int], depth: int = 0) -> None:
    for name, value in body.items():
        key = f"{prefix}.{name}"
        if isinstance(value, Mapping) and value and depth < 16:
            _flatten_into(layer, key, value, source, lines, depth + 1)
        else:
            line = lines.get(key)
            layer[key] = Raw(value, f"{source}:{line}" if line else source, False)


_TOML_TABLE = re.compile(r"\s*\[\s*([A-Za-z0-9_.\- ]+?)\s*\]\s*(#.*)?$")
_TOML_KEY = re.compile(r"\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")


def toml_key_lines(text: str) -> dict[str, int]:
    """Line numbers of ``key = value`` lines by dotted key (tables and dotted keys; no inline
    tables): where known, a problem's source says ``file:<path>:<line>``."""
    out: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _TOML_TABLE.match(line)
        if header:
            table = header.group(1).replace(" ", "")
            continue
        key = _TOML_KEY.match(line)
        if key:
            name = key.group(1).replace(" ", "")
            out.setdefault(f"{table}.{name}" if table else name, number)
    return out


def _mapping_layer(data: Any, source: str, problems: list[str],
                   lines: Mapping[str, int] | None = None) -> Layer:
    """Flatten a parsed file (nested mapping) into a layer; unknown keys become problems."""
    layer: Layer = {}
    if not isinstance(data, Mapping):
        problems.append(_file_problem(source, f"got {_type_name(data)}, not a table of sections",
                                      "a table of sections such as [bus]"))
        return layer
    for section, body in data.items():
        if section == APP and isinstance(body, Mapping):
            _flatten_into(layer, APP, body, source, lines or {})
            continue
        if section not in _SECTIONS:
            problems.append(_problem(
                str(section), body, source, "unknown section" + _suggest(str(section), _SECTIONS),
                "one of " + ", ".join(_SECTIONS)))
            continue
        if not isinstance(body, Mapping):
            problems.append(_problem(str(section), body, source, "not a table",
                                     f"a table [{section}] of keys"))
            continue
        for name, value in body.items():
            key = f"{section}.{name}"
            if key not in FIELDS:
                known = [k.split(".")[1] for k in FIELDS if k.startswith(section + ".")]
                problems.append(_problem(
                    key, value, source, "unknown key" + _suggest(str(name), known),
                    f"one of {', '.join(known)} in [{section}]"))
                continue
            line = (lines or {}).get(key)
            layer[key] = Raw(value, f"{source}:{line}" if line else source, False)
    return layer


def file_source(path: str | os.PathLike[str]) -> str:
    """The source label of a config file, ``file:<path>``, always encodable as UTF-8."""
    return f"file:{show_path(path)}"


EMPTY_FILE_REASON = ("a config file that had settings is never replaced by the defaults on "
                     "reload (a half-written file?); the previous config is kept")


class ParseCache:
    """The last parse of one file, by SHA-256 of its bytes (one per ``ConfigCell``).

    Parsing the same bytes again gives the same document, so a reload of an unchanged 1 MiB
    file (a SIGHUP storm) costs a read and a hash instead of a parse. One entry, replaced as a
    whole (safe when a worker thread and the loop use it at once).
    """

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[str, Any] | None = None  # (suffix + digest, parsed document)

    def parse(self, suffix: str, raw: bytes, parse: Callable[[], Any]) -> Any:
        """``parse()``'s document, or the cached one when ``raw`` is the same as last time."""
        key = suffix + hashlib.sha256(raw).hexdigest()
        entry = self.entry
        if entry is not None and entry[0] == key:
            return entry[1]
        data = parse()
        self.entry = (key, data)
        return data


def read_file(path: Path, problems: list[str], *, refuse_empty: bool = False,
              cache: ParseCache | None = None) -> Layer:
    """Read and flatten a TOML or JSON config file; every failure becomes a problem.

    With ``refuse_empty`` (a reload of a file that had settings), a file that yields no setting
    at all -- empty, whitespace only, only comments or empty tables -- is a problem too: that
    is what a file caught half-written looks like, and applying it would silently turn every
    value back to its default. ``cache`` skips the parse of bytes parsed last time.
    """
    source = file_source(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        problems.append(_file_problem(source, f"unknown file type {suffix!r}",
                                      "a .toml or .json file"))
        return {}
    try:
        if path.exists() and not path.is_file():
            problems.append(_file_problem(source, "not a regular file",
                                          "a regular .toml or .json file"))
            return {}
        # Read at most one byte past the limit: a huge file (or /dev/zero behind a symlink)
        # must not cost unbounded memory.
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        problems.append(_file_problem(source, "file not found",
                                      "an existing, readable config file"))
        return {}
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        why = getattr(exc, "strerror", None) or exc
        problems.append(_file_problem(source, f"cannot be read: {why}",
                                      "an existing, readable config file"))
        return {}
    if len(raw) > MAX_FILE_BYTES:
        problems.append(_file_problem(source, f"file too large (more than {MAX_FILE_BYTES} bytes)",
                                      f"at most {MAX_FILE_BYTES} bytes"))
        return {}
    if refuse_empty and not raw.strip():
        problems.append(_file_problem(
            source, f"empty file ({len(raw)} bytes{', whitespace only' if raw else ''}); "
            f"{EMPTY_FILE_REASON}",
            "a complete config file"))
        return {}
    def parse() -> tuple[Any, dict[str, int] | None]:  # the document and its key lines
        text = raw.decode("utf-8")
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_JsonTable), None
        return tomllib.loads(text), toml_key_lines(text)

    try:
        data, lines = parse() if cache is None else cache.parse(suffix, raw, parse)
    except UnicodeDecodeError as exc:
        problems.append(_file_problem(source, f"not UTF-8 text (byte {exc.start})",
                                      "a UTF-8 encoded file"))
        return {}
    except (ValueError, RecursionError) as exc:
        kind = "JSON" if suffix == ".json" else "TOML"
        # a half-written file usually fails here: the parser's message carries line and column
        reason = f"not valid {kind} ({str(exc).splitlines()[0] if str(exc) else 'too deep'})"
        problems.append(_file_problem(source, reason, f"a complete {kind} document"))
        return {}
    before = len(problems)
    if suffix == ".json":
        problems.extend(_json_duplicates(data, source))
    layer = _mapping_layer(data, source, problems, lines)
    if refuse_empty and not layer and len(problems) == before:
        problems.append(_file_problem(
            source, f"no settings (only comments or empty tables); {EMPTY_FILE_REASON}",
            "a complete config file"))
    return layer


class _JsonTable(dict[str, Any]):
    """A JSON object that remembers every key given more than once in it or in its tables.

    ``duplicates`` maps dotted names (``bus.capacity``) to how often they were given; tables
    replaced by a later duplicate still report their own duplicates.
    """

    duplicates: dict[str, int]

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates = {}
        for key, value in pairs:
            if key in self:
                self.duplicates[key] = self.duplicates.get(key, 1) + 1
            if isinstance(value, _JsonTable):
                for inner, times in value.duplicates.items():
                    name = f"{key}.{inner}"
                    self.duplicates[name] = max(self.duplicates.get(name, 0), times)
            self[key] = value


def _json_duplicates(data: Any, source: str) -> list[str]:
    """One problem per key given more than once in a JSON file, named by its dotted key."""
    if not isinstance(data, _JsonTable):
        return []
    return [f"{name} (from {source}): duplicate key (given {times} times; JSON would silently "
            "keep the last); expected each key once per table"
            for name, times in data.duplicates.items()]


def env_layer(env: Mapping[str, str], problems: list[str]) -> Layer:
    """The ``RONK_*`` variables as a layer; unknown ``RONK_*`` names become problems."""
    layer: Layer = {}
    alias = env.get(METRICS_ADDR_ALIAS)
    if alias is not None:
        _log.warning("config_deprecated_env", name=METRICS_ADDR_ALIAS, use="RONK_OBS_ADDR")
        layer["observability.addr"] = Raw(alias, f"env:{METRICS_ADDR_ALIAS}", True)
    for name in sorted(env):
        if not name.startswith("RONK_"):
            continue
        if name.startswith(APP_ENV_PREFIX) and len(name) > len(APP_ENV_PREFIX):
            path = name[len(APP_ENV_PREFIX):].lower().split("__")
            layer[".".join((APP, *path))] = Raw(env[name], f"env:{name}", True)
            continue
        fld = _BY_ENV.get(name)
        if fld is None:
            problems.append(_problem(
                name, env[name], f"env:{name}",
                "unknown environment variable" + _suggest(name, _BY_ENV),
                "one of " + ", ".join(_BY_ENV)))
            continue
        layer[fld.key] = Raw(env[name], f"env:{name}", True)
    return layer


def cli_layer(argv: Sequence[str], problems: list[str]) -> tuple[Layer, str | None]:
    """Parse config flags (``--flag value`` or ``--flag=value``); returns the layer and --config.

    Every unknown flag, stray argument or missing value becomes a problem (not just the first).
    """
    layer: Layer = {}
    config_path: str | None = None
    args = list(argv)
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not isinstance(token, str) or not token.startswith("--"):
            problems.append(_problem("(argv)", token, "cli", "unexpected argument",
                                     "--flag value pairs such as --bus-capacity 8"))
            continue
        flag, eq, value = token.partition("=")
        if flag == SET_FLAG:
            if not eq:
                if i >= len(args):
                    problems.append(_problem(SET_FLAG, None, f"cli:{SET_FLAG}", "missing value",
                                             "KEY=VALUE such as app.port=9000"))
                    continue
                value = str(args[i])
                i += 1
            key, has_eq, setting = value.partition("=")
            key = key.strip()
            if not has_eq or not key:
                problems.append(_problem(SET_FLAG, value, f"cli:{SET_FLAG}",
                                         "not KEY=VALUE", "KEY=VALUE such as app.port=9000"))
            elif key in FIELDS or key.startswith(APP + "."):
                layer[key] = Raw(setting, f"cli:{SET_FLAG} {key}", True)
            else:
                problems.append(_problem(key, setting, f"cli:{SET_FLAG}",
                                         "unknown key" + _suggest(key, FIELDS),
                                         "a dotted config key such as bus.capacity or app.*"))
            continue
        if flag != CONFIG_FLAG and flag not in _BY_FLAG:
            problems.append(_problem(flag, value if eq else None, f"cli:{flag}",
                                     "unknown flag" + _suggest(flag, KNOWN_FLAGS),
                                     "one of " + ", ".join(KNOWN_FLAGS)))
            if not eq and i < len(args) and not str(args[i]).startswith("--"):
                i += 1  # skip the unknown flag's value so it is not reported twice
            continue
        if not eq:
            if i >= len(args) or str(args[i]).startswith("--"):
                fld = _BY_FLAG.get(flag)
                problems.append(_problem(flag, None, f"cli:{flag}", "missing value",
                                         fld.expected if fld else "a file path"))
                continue
            value = args[i]
            i += 1
        if flag == CONFIG_FLAG:
            config_path = value  # an empty path is refused by choose_file, naming the flag
        else:
            layer[_BY_FLAG[flag].key] = Raw(value, f"cli:{flag}", True)
    return layer, config_path


def choose_file(path: str | os.PathLike[str] | None, env: Mapping[str, str],
                cli_path: str | None) -> tuple[Path, bool, str]:
    """Which file to read: ``(absolute path, named explicitly?, how it was named)``.

    Raises :class:`ConfigError` when the file is named by an empty (or blank) path --
    ``--config ''`` or ``Config.load("")`` -- naming the flag or argument: an empty path would
    otherwise become the working directory. An empty ``RON_CONFIG`` counts as unset (the shell
    idiom ``RON_CONFIG= cmd``).
    """
    if cli_path is not None:
        chosen, explicit, how = cli_path, True, f"cli:{CONFIG_FLAG}"
    elif path is not None:
        chosen, explicit, how = os.fspath(path), True, "argument"
    elif env.get(CONFIG_ENV):
        chosen, explicit, how = env[CONFIG_ENV], True, f"env:{CONFIG_ENV}"
    else:
        chosen, explicit, how = DEFAULT_FILE, False, "default"
    if not chosen.strip():
        key = CONFIG_FLAG if how.startswith("cli:") else "config path"
        raise ConfigError([_problem(key, chosen, how, "empty path",
                                    "the path of a .toml or .json config file")])
    try:
        resolved = Path(chosen).expanduser()
    except RuntimeError:  # "~user" with no such user: read it literally, and fail as not found
        resolved = Path(chosen)
    return Path.cwd() / resolved, explicit, how


# ----------------------------------------------------------------------------- coercion

_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})
_INT = re.compile(r"[+-]?[0-9]{1,20}")


class _Bad(Exception):
    """One value failed its field's parser; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            dict: "a table", list: "an array"}.get(type(value), type(value).__name__)


def _coerce(fld: _Field, raw: Raw) -> Any:
    """Turn a raw value into the field's type, or raise ``_Bad``."""
    value = raw.value
    if fld.kind == "duration":
        if isinstance(value, timedelta):
            out = value
        elif isinstance(value, str):
            try:
                out = parse_duration(value)
            except ValueError as exc:
                raise _Bad(str(exc)) from None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            raise _Bad(f"a bare number has no unit; write \"{value}s\" or \"{value}ms\"")
        else:
            raise _Bad(f"got {_type_name(value)}")
        if out < fld.lo:
            raise _Bad("too small" if out >= timedelta(0) else "negative")
        if out > fld.hi:
            raise _Bad("absurdly long")
        return out
    if fld.kind == "int":
        if raw.text:
            if not isinstance(value, str) or not _INT.fullmatch(value.strip()):
                raise _Bad("not an integer")
            out_int = int(value.strip())
        elif isinstance(value, int) and not isinstance(value, bool):
            out_int = value
        else:
            raise _Bad(f"got {_type_name(value)}")
        if not fld.lo <= out_int <= fld.hi:
            raise _Bad("out of range")
        return out_int
    if fld.kind == "bool":
        if raw.text:
            word = value.strip().lower() if isinstance(value, str) else ""
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise _Bad("not a boolean")
        if isinstance(value, bool):
            return value
        raise _Bad(f"got {_type_name(value)}")
    if not isinstance(value, str):
        raise _Bad(f"got {_type_name(value)}")
    if fld.kind == "secret":
        # never strip or echo: the reason says what is wrong, the value stays redacted
        if value == "":
            return value
        if not _TOKEN.fullmatch(value):
            raise _Bad("holds spaces, control or non-ASCII characters")
        if not MIN_TOKEN_CHARS <= len(value) <= MAX_TOKEN_CHARS:
            raise _Bad(f"{len(value)} characters")
        return value
    if fld.kind == "enum":
        word = value.strip().lower()
        if word not in fld.choices:
            raise _Bad("not a known value" + _suggest(word, fld.choices))
        return word
    if fld.kind == "url":
        url = value.strip()
        if url:
            why = check_nats_url(url)
            if why is not None:
                raise _Bad(f"not a NATS URL: {why}")
        return url
    if fld.kind == "subject":
        why = check_subject_token(value)
        if why is not None:
            raise _Bad(why)
        return value
    # addr: must always parse; concreteness is a cross-field rule (only with expose_http)
    try:
        parse_addr(value)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    return value.strip()


def merge(layers: Iterable[Layer]) -> Layer:
    """Merge layers, lowest precedence first: a later layer's value replaces an earlier one's."""
    out: Layer = {}
    for layer in layers:
        out.update(layer)
    return out


def _build(layers: Sequence[Layer], problems: list[str], *,
           version: int = 1, app: type[Any] | None = None) -> tuple[Config[Any], Layer]:
    """Merge, coerce, check cross-field rules; return the config or raise every problem."""
    merged = merge(layers)
    app_instance = _build_app(app, merged, problems)
    typed: dict[str, Any] = {}
    for key, fld in FIELDS.items():
        raw = merged[key]
        try:
            typed[key] = _coerce(fld, raw)
        except _Bad as bad:
            problems.append(_problem(key, raw.value, raw.source, bad.reason, fld.expected))
    # Cross-field rules run on every pair whose fields are valid, so one bad field does not hide
    # an unrelated min > max problem: every problem is listed at once.
    problems.extend(_cross_field(typed, merged))
    if problems:
        raise ConfigError(problems)
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in typed.items():
        section, name = key.split(".")
        sections[section][name] = value
    config: Config[Any] = Config(
        **{name: cls(**sections[name]) for name, cls in _SECTIONS.items()},
        version=version, app=app_instance)
    return config, merged


def _build_app(app: type[Any] | None, merged: Layer, problems: list[str]) -> Any:
    """Validate the ``app.*`` keys with the app model; every problem names key and source."""
    prefix = APP + "."
    raw = {key[len(prefix):]: r for key, r in merged.items() if key.startswith(prefix)}
    if app is None:
        for key, r in raw.items():
            problems.append(_problem(
                prefix + key, r.value, r.source, "no app config model is declared",
                "Kernel(app_config=YourModel) or Config.load(..., app=YourModel)"))
        return None
    instance, app_problems = validate_app(app, {key: r.value for key, r in raw.items()})
    for problem in app_problems:
        found = raw.get(problem.key)
        source = found.source if found is not None else "no layer sets it"
        problems.append(_problem(prefix + problem.key, problem.value, source, problem.reason,
                                 problem.expected))
    return instance


def _cross_field(typed: Mapping[str, Any], merged: Layer) -> list[str]:
    out = []
    lo, hi = typed.get("supervisor.min_backoff"), typed.get("supervisor.max_backoff")
    if lo is not None and hi is not None and lo > hi:
        out.append(_problem(
            "supervisor.min_backoff", lo, merged["supervisor.min_backoff"].source,
            f"greater than supervisor.max_backoff = {format_duration(hi)} "
            f"(from {merged['supervisor.max_backoff'].source})",
            "min_backoff <= max_backoff"))
    count, need = typed.get("workers.count"), typed.get("workers.min_ready")
    if count and need is not None and need > count:
        out.append(_problem(
            "workers.min_ready", need, merged["workers.min_ready"].source,
            f"greater than workers.count = {count} (from {merged['workers.count'].source})",
            "at most workers.count (0: every worker)"))
    if typed.get("observability.expose_http") and "observability.addr" in typed:
        host, _ = parse_addr(typed["observability.addr"])
        if binds_every_interface(host):
            out.append(_problem(
                "observability.addr", typed["observability.addr"],
                merged["observability.addr"].source,
                "not a concrete address while observability.expose_http is true "
                f"(from {merged['observability.expose_http'].source})",
                "a specific host such as 127.0.0.1:9909"))
    if typed.get("federation.nats_url") and not nats_installed():
        out.append(_problem(
            "federation.nats_url", typed["federation.nats_url"],
            merged["federation.nats_url"].source,
            "federation needs the nats extra, which is not installed",
            f"{NATS_EXTRA_HINT}, or an empty federation.nats_url"))
    return out


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return True  # let read_file report why it cannot be read


class Resolved(NamedTuple):
    """The outcome of a full resolution: the config, every value's source, and the file used."""

    config: Config[Any]
    sources: dict[str, str]
    file: Path
    file_used: bool
    file_settings: int = 0  # how many keys the file set (0: no file, or an empty one)


def resolve(path: str | os.PathLike[str] | None = None, *,
            env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None,
            file: Path | None = None, require_file: bool | None = None,
            refuse_empty: bool = False, cache: ParseCache | None = None,
            version: int = 1, app: type[Any] | None = None) -> Resolved:
    """Run the whole pipeline; ``file``/``require_file`` pin the file (used by ``ConfigCell``).

    ``refuse_empty``: a file without any setting is a problem; ``cache``: reuse the last parse
    of identical bytes (both: see :func:`read_file`).
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    cli, cli_path = cli_layer(argv or (), problems)
    named = True
    try:
        chosen, explicit, _how = choose_file(path, env, cli_path)
    except ConfigError as exc:  # an empty path: no file to read; list it with the rest
        problems.extend(exc.problems)
        chosen, explicit, named = Path(DEFAULT_FILE), False, False
    if file is not None:
        chosen = file
    if require_file is not None:
        explicit = require_file
    file_layer: Layer = {}
    used = False
    if named and (explicit or _exists(chosen)):
        file_layer = read_file(chosen, problems, refuse_empty=refuse_empty, cache=cache)
        used = True
    elif named:
        _log.info("config_defaults_applied", path=show_path(chosen),
                  reason="no config file; using built-in defaults")
    layers = [_default_layer(), file_layer, env_layer(env, problems), cli]
    config, merged = _build(layers, problems, version=version, app=app)
    sources = {k: merged[k].source for k in FIELDS}
    for key in config.flat():
        if key.startswith(APP + "."):
            sources[key] = merged[key].source if key in merged else "default"
    return Resolved(config, sources, chosen, used, len(file_layer))


def peek(keys: Iterable[str], path: str | os.PathLike[str] | None = None, *,
         env: Mapping[str, str] | None = None,
         argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The values of a few kernel ``keys`` from the sources, before the whole config is built.

    For what must be known before the app's module is imported (which the full load needs for
    its ``APP_CONFIG``): ``amnesia.enabled`` decides whether that import may write bytecode. A
    key whose value is invalid is left out, and so is every key when a source has a problem
    (an unreadable file may have set any of them): the full load reports it. Nothing is logged.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    cli, cli_path = cli_layer(argv or (), problems)
    try:
        chosen, explicit, _how = choose_file(path, env, cli_path)
    except ConfigError:
        chosen, explicit = None, False
    file_layer: Layer = {}
    if chosen is not None and (explicit or _exists(chosen)):
        file_layer = read_file(chosen, problems)
    merged = merge([_default_layer(), file_layer, env_layer(env, problems), cli])
    out: dict[str, Any] = {}
    if problems:
        return out
    for key in keys:
        fld, raw = FIELDS.get(key), merged.get(key)
        if fld is None or raw is None:
            continue
        try:
            out[key] = _coerce(fld, raw)
        except _Bad:
            continue
    return out


def file_has_settings(path: Path, cache: ParseCache | None = None) -> bool:
    """Whether ``path`` exists and sets at least one key (problems aside); never raises."""
    try:
        if not path.is_file():
            return False
    except (OSError, ValueError):
        return False
    return bool(read_file(path, [], cache=cache))


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, str]]:
    """Changed keys between two flat configs, values redacted, with each key's reload class."""
    out = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before != after:
            fld = FIELDS.get(key)
            out.append({"key": key, "old": show(key, before), "new": show(key, after),
                        "applies": fld.reload if fld else IMMEDIATE})
    return out


def with_version(config: Config[M], version: int) -> Config[M]:
    """A copy of ``config`` with another version number."""
    return dataclasses.replace(config, version=version)


def to_toml(config: Config[Any]) -> str:
    """Render ``config`` as a TOML file that loads back to an equal config (version aside)."""
    lines = []
    for section in _SECTIONS:
        lines.append(f"[{section}]")
        for key, value in config.flat().items():
            if key.startswith(section + "."):
                lines.append(f"{key.split('.')[1]} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return f'"{format_duration(value)}"'
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


_DEFAULTS: Config[None] = Config()
Callback = Callable[[Config[Any], Config[Any]], None]

