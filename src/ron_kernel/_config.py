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
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, NamedTuple

from ._logging import get_logger
from .errors import ConfigError

__all__ = [
    "AmnesiaConfig",
    "BusConfig",
    "Config",
    "LogConfig",
    "ObservabilityConfig",
    "PqConfig",
    "ShutdownConfig",
    "SupervisorConfig",
    "format_duration",
    "parse_duration",
]

_log = get_logger("config")

DEFAULT_FILE = "Config.toml"
CONFIG_ENV = "RON_CONFIG"
CONFIG_FLAG = "--config"
# RUNBOOK §2 names this variable; it is accepted as a deprecated alias of RONK_OBS_ADDR.
METRICS_ADDR_ALIAS = "RON_KERNEL_METRICS_ADDR"

MAX_DURATION = timedelta(hours=24)
MAX_BUS_CAPACITY = 1 << 20
MAX_RESTART_CAP = 10_000
MAX_FILE_BYTES = 1 << 20
# Below 10 ms, timer jitter and GC pauses would count as blocks; above 1 h is a typo.
MIN_LOOP_BLOCK_THRESHOLD = timedelta(milliseconds=10)
MAX_LOOP_BLOCK_THRESHOLD = timedelta(hours=1)

PQ_MODES = ("off", "hybrid", "pq-only")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")

# Reload classes (CONFIG.MD §5): when a changed value takes effect.
IMMEDIATE = "immediate"          # the kernel applies it as soon as ConfigUpdated is published
NEXT_RESTART = "next-restart"    # supervisor policy: used by the next (re)start of a child
NEXT_START = "next-start"        # fixed for the life of the kernel: applies when it next starts

_SECRET = re.compile(r"token|secret|password|passwd|key", re.IGNORECASE)
REDACTED = "<redacted>"


# ----------------------------------------------------------------------------- durations

_UNIT_US = {"h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000, "us": 1, "µs": 1}
_UNIT_ORDER = ("h", "m", "s", "ms", "us")
_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs)")
_BARE_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_UNITS_HINT = "units: h, m, s, ms, us; e.g. '100ms', '1.5s', '1h30m'"


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``100ms``, ``1.5s``, ``30s``, ``5m``, ``1h``, ``1h30m``, ``250us``.

    Units are ``h``, ``m``, ``s``, ``ms`` and ``us`` (or ``µs``), each at most once, largest
    first. The result is rounded to the microsecond (``timedelta``'s resolution).

    Raises ``ValueError`` with a specific reason: a bare number (no unit; the message suggests
    one), a negative value, a value above 24h, or anything else that does not parse.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as '5s', got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise ValueError(f"empty duration ({_UNITS_HINT})")
    if len(s) > 64:
        raise ValueError("duration text is too long (more than 64 characters)")
    if _BARE_NUMBER.fullmatch(s):
        number = s.lstrip("+")
        if number.startswith("-"):
            raise ValueError(f"negative durations are not allowed ({_UNITS_HINT})")
        raise ValueError(
            f"a bare number has no unit; write '{number}s' or '{number}ms' ({_UNITS_HINT})")
    if s.startswith("-"):
        raise ValueError("negative durations are not allowed")
    total = Decimal(0)
    pos = 0
    last_rank = -1
    while pos < len(s):
        part = _PART.match(s, pos)
        if part is None:
            raise ValueError(f"cannot parse {s[pos:]!r} ({_UNITS_HINT})")
        unit = "us" if part.group(2) == "µs" else part.group(2)
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(f"units must appear once each, largest first ({_UNITS_HINT})")
        last_rank = rank
        total += Decimal(part.group(1)) * _UNIT_US[unit]
        pos = part.end()
    micros = int(total.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if micros > MAX_DURATION // timedelta(microseconds=1):
        raise ValueError(f"absurdly long: more than {format_duration(MAX_DURATION)}")
    return timedelta(microseconds=micros)


def format_duration(value: timedelta) -> str:
    """Format a ``timedelta`` in the syntax :func:`parse_duration` reads (``1h30m``, ``1s500ms``).

    ``parse_duration(format_duration(d)) == d`` for every non-negative ``d`` up to 24h.
    Raises ``ValueError`` for a negative duration.
    """
    micros = value // timedelta(microseconds=1)
    if micros < 0:
        raise ValueError("negative durations cannot be formatted")
    if micros == 0:
        return "0s"
    out = []
    for unit in _UNIT_ORDER:
        count, micros = divmod(micros, _UNIT_US[unit])
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


# ----------------------------------------------------------------------------- addresses

_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def parse_addr(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into ``(host, port)``; ``ValueError`` if bad."""
    s = text.strip()
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("an IPv6 address needs the form [addr]:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = s.rpartition(":")
        if not sep:
            raise ValueError("no port")
        if ":" in host:
            raise ValueError("an IPv6 address must be bracketed, as [::1]:9909")
        if not host:
            raise ValueError("no host")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not an IP address or host name")
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is above 65535")
    return host, port


def _is_concrete(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return True  # a host name names something specific


# ----------------------------------------------------------------------------- the schema


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorConfig:
    """``[supervisor]``: restart backoff and the restart budget (CONFIG.MD §3)."""

    min_backoff: timedelta = timedelta(milliseconds=100)
    max_backoff: timedelta = timedelta(seconds=30)
    restart_cap: int = 5
    restart_window: timedelta = timedelta(seconds=60)
    reset_after: timedelta = timedelta(seconds=30)


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
    """

    expose_http: bool = False
    addr: str = "127.0.0.1:0"
    loop_block_threshold: timedelta = timedelta(milliseconds=100)
    debug_endpoints: bool = False

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


_SECTIONS: dict[str, type[Any]] = {
    "supervisor": SupervisorConfig,
    "bus": BusConfig,
    "amnesia": AmnesiaConfig,
    "pq": PqConfig,
    "observability": ObservabilityConfig,
    "log": LogConfig,
    "shutdown": ShutdownConfig,
}


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    kind: str  # duration | int | bool | enum | addr
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
    _Field("log.format", "enum", "RONK_LOG_FORMAT", "--log-format", IMMEDIATE,
           "one of json, text", choices=LOG_FORMATS, help="log format"),
    _Field("log.level", "enum", "RONK_LOG_LEVEL", "--log-level", IMMEDIATE,
           "one of trace, debug, info, warn, error", choices=LOG_LEVELS, help="log level"),
    _dur("shutdown.drain_deadline", "RONK_DRAIN_DEADLINE", "--drain-deadline", IMMEDIATE,
         _TINY, "graceful shutdown deadline before stragglers are cancelled"),
)}
_BY_ENV = {f.env: f for f in FIELDS.values()}
_BY_FLAG = {f.flag: f for f in FIELDS.values()}
KNOWN_ENV = (*_BY_ENV, CONFIG_ENV, METRICS_ADDR_ALIAS)
KNOWN_FLAGS = (CONFIG_FLAG, *_BY_FLAG)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The kernel's configuration: an immutable snapshot (CONFIG.MD §3 plus QUANTUM.MD §4).

    ``Config()`` holds the built-in defaults; :meth:`load` merges, highest first, CLI flags >
    ``RONK_*`` environment > TOML/JSON file > defaults and validates the result, raising
    :class:`~ron_kernel.errors.ConfigError` that lists every problem with its key and source::

        cfg = Config.load("Config.toml", env=os.environ, argv=["--bus-capacity", "8192"])
        cfg.bus.capacity                 # 8192
        cfg.supervisor.min_backoff       # datetime.timedelta(microseconds=100000)

    Sections: ``supervisor``, ``bus``, ``amnesia``, ``pq``, ``observability``, ``log`` and
    ``shutdown``. ``version`` is 1 for a first load (and for ``Config()``); each reload applied by
    :class:`ron_kernel.config.ConfigCell` adds one. Instances are frozen and hashable; build a
    changed copy with :meth:`from_mapping`.
    """

    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    amnesia: AmnesiaConfig = field(default_factory=AmnesiaConfig)
    pq: PqConfig = field(default_factory=PqConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    log: LogConfig = field(default_factory=LogConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    version: int = 1

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             env: Mapping[str, str] | None = None,
             argv: Sequence[str] | None = None) -> Config:
        """Build the effective config from defaults < file < environment < ``argv``, validated.

        The file is ``--config`` in ``argv``, else ``path``, else ``$RON_CONFIG``, else
        ``Config.toml`` in the working directory; relative paths are resolved against the working
        directory. ``.toml`` files are read as TOML, ``.json`` as JSON. A missing default file
        means defaults (logged); a file named explicitly but missing is an error. ``argv`` holds
        flags only (``["--bus-capacity", "8"]``); ``env`` defaults to ``os.environ``. An unknown
        flag or ``RONK_*`` variable is an error. Raises :class:`~ron_kernel.errors.ConfigError`
        listing every problem.
        """
        return resolve(path, env=env, argv=argv).config

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: Config | None = None,
                     source: str = "api") -> Config:
        """Return ``base`` (default: the defaults) with the sections of ``data`` applied.

        ``data`` has the shape of a config file (``{"bus": {"capacity": 8}}``); values are
        checked exactly as a file's are (durations as strings like ``"5s"``, or ``timedelta``).
        Raises :class:`~ron_kernel.errors.ConfigError` naming ``source`` for each problem.
        """
        layers = [_flat_layer(base, "default" if base is None else "base")]
        problems: list[str] = []
        layers.append(_mapping_layer(data, source, problems))
        return _build(layers, problems, version=1 if base is None else base.version)[0]

    def validate(self) -> None:
        """Check every value and rule again; raise ``ConfigError`` listing every problem.

        ``load`` and ``from_mapping`` already validate; this is for configs built directly
        (``Config(bus=BusConfig(capacity=0))``).
        """
        _build([_flat_layer(self, "value")], [], version=self.version)

    def flat(self) -> dict[str, Any]:
        """Every value by dotted key (``{"bus.capacity": 4096, ...}``); ``version`` excluded."""
        return {key: getattr(getattr(self, key.split(".")[0]), key.split(".")[1])
                for key in FIELDS}


# ----------------------------------------------------------------------------- sources

class Raw(NamedTuple):
    """One raw value and where it came from."""

    value: Any
    source: str
    text: bool  # a string to parse (env var, CLI flag) rather than a typed value


Layer = dict[str, Raw]


def _flat_layer(cfg: Config | None, source: str) -> Layer:
    values = (cfg if cfg is not None else _DEFAULTS).flat()
    return {key: Raw(value, source, False) for key, value in values.items()}


@functools.cache
def _default_layer() -> Layer:
    # the defaults never change: flatten them once (layers are only read, never mutated)
    return _flat_layer(None, "default")


def is_secret(key: str) -> bool:
    """Whether a key's value must never be shown (its name mentions a token, secret, ...)."""
    return bool(_SECRET.search(key.rsplit(".", 1)[-1]))


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
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(key: str, value: Any, source: str, reason: str, expected: str) -> str:
    return f"{key} = {show(key, value)} (from {source}): {reason}; expected {expected}"


def _file_problem(source: str, reason: str, expected: str) -> str:
    return f"config file (from {source}): {reason}; expected {expected}"


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _mapping_layer(data: Any, source: str, problems: list[str]) -> Layer:
    """Flatten a parsed file (nested mapping) into a layer; unknown keys become problems."""
    layer: Layer = {}
    if not isinstance(data, Mapping):
        problems.append(_file_problem(source, f"got {_type_name(data)}, not a table of sections",
                                      "a table of sections such as [bus]"))
        return layer
    for section, body in data.items():
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
            layer[key] = Raw(value, source, False)
    return layer


def read_file(path: Path, problems: list[str]) -> Layer:
    """Read and flatten a TOML or JSON config file; every failure becomes a problem."""
    source = f"file:{path}"
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
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if suffix == ".json" else tomllib.loads(text)
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
    return _mapping_layer(data, source, problems)


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
            config_path = value
        else:
            layer[_BY_FLAG[flag].key] = Raw(value, f"cli:{flag}", True)
    return layer, config_path


def choose_file(path: str | os.PathLike[str] | None, env: Mapping[str, str],
                cli_path: str | None) -> tuple[Path, bool, str]:
    """Which file to read: ``(absolute path, named explicitly?, how it was named)``."""
    if cli_path is not None:
        chosen, explicit, how = cli_path, True, f"cli:{CONFIG_FLAG}"
    elif path is not None:
        chosen, explicit, how = os.fspath(path), True, "argument"
    elif env.get(CONFIG_ENV):
        chosen, explicit, how = env[CONFIG_ENV], True, f"env:{CONFIG_ENV}"
    else:
        chosen, explicit, how = DEFAULT_FILE, False, "default"
    try:
        resolved = Path(chosen).expanduser()
    except RuntimeError:  # "~user" with no such user: read it literally, and fail as not found
        resolved = Path(chosen)
    return Path.cwd() / resolved, explicit, how


# ----------------------------------------------------------------------------- coercion

_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})
_INT = re.compile(r"[+-]?\d{1,20}")


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
    if fld.kind == "enum":
        word = value.strip().lower()
        if word not in fld.choices:
            raise _Bad("not a known value" + _suggest(word, fld.choices))
        return word
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
           version: int = 1) -> tuple[Config, Layer]:
    """Merge, coerce, check cross-field rules; return the config or raise every problem."""
    merged = merge(layers)
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
    config = Config(**{name: cls(**sections[name]) for name, cls in _SECTIONS.items()},
                    version=version)
    return config, merged


def _cross_field(typed: Mapping[str, Any], merged: Layer) -> list[str]:
    out = []
    lo, hi = typed.get("supervisor.min_backoff"), typed.get("supervisor.max_backoff")
    if lo is not None and hi is not None and lo > hi:
        out.append(_problem(
            "supervisor.min_backoff", lo, merged["supervisor.min_backoff"].source,
            f"greater than supervisor.max_backoff = {format_duration(hi)} "
            f"(from {merged['supervisor.max_backoff'].source})",
            "min_backoff <= max_backoff"))
    if typed.get("observability.expose_http") and "observability.addr" in typed:
        host, _ = parse_addr(typed["observability.addr"])
        if not _is_concrete(host):
            out.append(_problem(
                "observability.addr", typed["observability.addr"],
                merged["observability.addr"].source,
                "not a concrete address while observability.expose_http is true "
                f"(from {merged['observability.expose_http'].source})",
                "a specific host such as 127.0.0.1:9909"))
    return out


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return True  # let read_file report why it cannot be read


class Resolved(NamedTuple):
    """The outcome of a full resolution: the config, every value's source, and the file used."""

    config: Config
    sources: dict[str, str]
    file: Path
    file_used: bool


def resolve(path: str | os.PathLike[str] | None = None, *,
            env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None,
            file: Path | None = None, require_file: bool | None = None,
            version: int = 1) -> Resolved:
    """Run the whole pipeline; ``file``/``require_file`` pin the file (used by ``ConfigCell``)."""
    env = os.environ if env is None else env
    problems: list[str] = []
    cli, cli_path = cli_layer(argv or (), problems)
    chosen, explicit, _how = choose_file(path, env, cli_path)
    if file is not None:
        chosen = file
    if require_file is not None:
        explicit = require_file
    file_layer: Layer = {}
    used = False
    if explicit or _exists(chosen):
        file_layer = read_file(chosen, problems)
        used = True
    else:
        _log.info("config_defaults_applied", path=str(chosen),
                  reason="no config file; using built-in defaults")
    layers = [_default_layer(), file_layer, env_layer(env, problems), cli]
    config, merged = _build(layers, problems, version=version)
    return Resolved(config, {k: merged[k].source for k in FIELDS}, chosen, used)


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


def with_version(config: Config, version: int) -> Config:
    """A copy of ``config`` with another version number."""
    return dataclasses.replace(config, version=version)


def to_toml(config: Config) -> str:
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


_DEFAULTS = Config()
Callback = Callable[[Config, Config], None]

