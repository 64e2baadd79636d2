"""Structured logging for the kernel: JSON lines (structlog + orjson) or text for people.

The pipeline, top to bottom, each step a small function:

1. ``_drop_below_level``: the runtime level (``set_level``) filters first, so a dropped debug
   call costs one dict lookup and a comparison.
2. ``_standard_fields``: ``ts`` (ISO 8601 UTC), ``level``, ``service``, ``event``, ``corr_id``,
   ``amnesia`` first, then the caller's fields (``component``, ``reason``, ``latency_ms``, ...).
3. ``redact``: the one rule of ``ron_kernel._redact``: values under secret-like names
   (``api_token``, ``Password``, ``dsn``, ... nested dicts and lists too) become ``"***"``, URL
   credentials in any string are removed; the kernel's own fields (``key``, ``reason``, ...)
   are never taken for secrets.
4. exception formatting, then the renderer (orjson JSON, or structlog's console renderer).

Logs go to one text stream, ``sys.stderr`` unless ``configure_logging(stream=...)`` names
another; the kernel never opens a log file (amnesia). Logging is process-wide by nature: these
settings are the one piece of module state, and ``get_logger`` loggers made before
``configure_logging`` follow the new settings.

Logging never raises into its caller: a line that cannot be encoded is written with the
offending characters escaped, and a stream that fails (closed pipe, full disk) drops the line
and counts it (:func:`dropped_lines`). The supervisor's restart decisions never depend on it.
"""

from __future__ import annotations

import contextvars
import logging as stdlib_logging
import sys
import uuid
import warnings
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog

from ._redact import REDACTED, is_secret_name, redact_value
from ._text import cap, printable, printable_value

LEVELS: dict[str, int] = {
    "trace": 10,  # Python has no TRACE: it maps to debug
    "debug": 10,
    "info": 20,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "critical": 50,
}
# structlog method name -> (numeric level, level as written in the log line)
_METHODS: dict[str, tuple[int, str]] = {
    "debug": (10, "DEBUG"),
    "info": (20, "INFO"),
    "msg": (20, "INFO"),
    "warning": (30, "WARN"),
    "warn": (30, "WARN"),
    "error": (40, "ERROR"),
    "exception": (40, "ERROR"),
    "critical": (50, "CRITICAL"),
    "fatal": (50, "CRITICAL"),
}
FORMATS = ("json", "text")

_corr_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ron_kernel_corr_id", default=None)


class _Settings:
    __slots__ = ("amnesia", "dropped", "explicit", "format", "level", "service", "stream")

    def __init__(self) -> None:
        self.format = "json"
        self.level = LEVELS["info"]
        self.service = "ron-kernel"
        self.amnesia = False
        self.stream: TextIO | None = None
        # True once an embedder called configure_logging: the kernel then leaves format, level
        # and stream alone (it still sets the amnesia field).
        self.explicit = False
        self.dropped = 0


_settings = _Settings()


# ---------------------------------------------------------------------------- correlation ids


def new_corr_id() -> str:
    """Return a fresh correlation id (a random UUID, as text)."""
    return str(uuid.uuid4())


def current_corr_id() -> str | None:
    """The correlation id bound in the current context, or ``None``."""
    return _corr_id.get()


@contextmanager
def bind_corr_id(corr_id: str | None = None) -> Iterator[str]:
    """Bind ``corr_id`` (a new one when ``None``) for the ``with`` block; yields it.

    It is a ``contextvars`` value: every log line and span in the block carries it, and so does
    every task created inside the block (``asyncio.create_task`` copies the context), which is how
    it reaches work a bus message starts: bind the id carried by the message in the consumer,
    or spawn the consumer's work inside the block. Raises ``ValueError`` for an empty id, one
    longer than 128 characters, or one with control characters.
    """
    value = new_corr_id() if corr_id is None else corr_id
    if (not isinstance(value, str) or not value or len(value) > 128
            or not value.isprintable()):
        raise ValueError(f"corr_id must be 1..128 printable characters, got {corr_id!r}")
    token = _corr_id.set(value)
    try:
        yield value
    finally:
        _corr_id.reset(token)


# ---------------------------------------------------------------------------- processors


def _drop_below_level(logger: Any, method: str, event: MutableMapping[str, Any]
                      ) -> MutableMapping[str, Any]:
    if _METHODS.get(method, (20, ""))[0] < _settings.level:
        raise structlog.DropEvent
    return event


def _standard_fields(logger: Any, method: str, event: MutableMapping[str, Any]
                     ) -> MutableMapping[str, Any]:
    # Build a new mapping so the standard fields come first in every line.
    ordered: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "level": _METHODS.get(method, (20, method.upper()))[1],
        "service": event.pop("service", _settings.service),
        "event": event.pop("event", ""),
        "corr_id": event.pop("corr_id", None) or _corr_id.get(),
        "amnesia": "on" if _settings.amnesia else "off",
    }
    if method == "exception":
        event.setdefault("exc_info", True)
    ordered.update(event)
    return ordered


def redact(logger: Any, method: str, event: MutableMapping[str, Any]
           ) -> MutableMapping[str, Any]:
    """Redact secret-named fields (nested too) and URL credentials (see ``_redact``)."""
    for k in list(event):
        if k == "event":
            continue
        event[k] = REDACTED if is_secret_name(k) else redact_value(event[k])
    return event


def _orjson_dumps(obj: Any, **_: Any) -> str:
    try:
        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        # e.g. a file name decoded with surrogate escapes: escape what UTF-8 cannot carry
        return orjson.dumps(printable_value(obj), default=_printable_default,
                            option=orjson.OPT_NON_STR_KEYS).decode()


def _printable_default(value: Any) -> str:
    return printable(str(value))


MAX_EXCEPTION_CHARS = 16_384
"""The longest traceback text a log line carries (its start and end are kept)."""


def _cap_exception(logger: Any, method: str, event: MutableMapping[str, Any]
                   ) -> MutableMapping[str, Any]:
    text = event.get("exception")
    if isinstance(text, str) and len(text) > MAX_EXCEPTION_CHARS:
        event["exception"] = cap(text, MAX_EXCEPTION_CHARS)
    return event


def _text_fields(logger: Any, method: str, event: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
    """The console renderer appends ``stack`` and ``exception`` as text: give it text (the loop
    monitor's ``stack`` is a list of frames, which made the renderer raise)."""
    for key in ("stack", "exception"):
        value = event.get(key)
        if value is not None and not isinstance(value, str):
            event[key] = ("\n".join(str(v) for v in value) if isinstance(value, list | tuple)
                          else str(value))
    return event


def _build_processors(fmt: str, stream: TextIO | None) -> list[Any]:
    common: list[Any] = [_drop_below_level, _standard_fields, redact]
    if fmt == "json":
        return [*common, structlog.processors.format_exc_info, _cap_exception,
                structlog.processors.JSONRenderer(serializer=_orjson_dumps)]
    target = stream if stream is not None else sys.stderr
    colors = bool(getattr(target, "isatty", lambda: False)())
    # plain_traceback: the rich default prints local variables, which may hold secrets
    return [*common, _text_fields, structlog.dev.ConsoleRenderer(
        colors=colors, timestamp_key="ts", exception_formatter=structlog.dev.plain_traceback)]


class _SafeBoundLogger(structlog.BoundLogger):
    """A bound logger whose processing never raises into the caller.

    A processor that fails on some field (a renderer given a type it does not expect) would
    otherwise raise from ``log.info(...)`` into the kernel's own code, e.g. its shutdown. The
    line is then written in a minimal form naming the failure, and counted as dropped.
    """

    def _process_event(self, method_name: str, event: str | None,
                       event_kw: dict[str, Any]) -> tuple[Sequence[Any], Mapping[str, Any]]:
        try:
            return super()._process_event(method_name, event, event_kw)
        except structlog.DropEvent:
            raise
        except Exception as exc:
            _settings.dropped += 1
            line = _orjson_dumps({
                "ts": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00",
                                                                                    "Z"),
                "level": _METHODS.get(method_name, (20, "INFO"))[1],
                "service": _settings.service, "event": printable(str(event)),
                "amnesia": "on" if _settings.amnesia else "off",
                "log_error": printable(f"{type(exc).__name__}: {exc}")[:500]})
            return (line,), {}


# One list object shared by every logger: configure_logging swaps its contents in place.
_processors: list[Any] = _build_processors("json", None)


class _StreamLogger:
    """Writes each rendered line to the configured stream (resolved at write time).

    Never raises: a line the stream cannot encode is escaped and written again; a stream that
    fails (closed, broken pipe, ``sys.stderr`` set to ``None``) drops the line and counts it.
    """

    def msg(self, message: str) -> None:
        stream = _settings.stream if _settings.stream is not None else sys.stderr
        try:
            try:
                stream.write(message + "\n")
            except UnicodeEncodeError:
                stream.write(printable(message).encode("ascii", "backslashreplace").decode() + "\n")
            stream.flush()
        except Exception:
            _settings.dropped += 1

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


_stream_logger = _StreamLogger()


# ---------------------------------------------------------------------------- public helpers


def _level_number(level: str) -> int:
    number = LEVELS.get(str(level).lower())
    if number is None:
        raise ValueError(f"log.level must be one of {sorted(LEVELS)}, got {level!r}")
    return number


def flush_log_stream() -> None:
    """Flush the log stream (before ``os._exit``); never raises."""
    stream = _settings.stream if _settings.stream is not None else sys.stderr
    try:
        stream.flush()
    except Exception:
        _settings.dropped += 1


def dropped_lines() -> int:
    """Log lines dropped because the stream failed (process-wide, since start)."""
    return _settings.dropped


def configure_logging(*, format: str = "json", level: str = "info", stream: TextIO | None = None,
                      amnesia: bool = False, service: str = "ron-kernel") -> None:
    """Set the process-wide log format, level and stream (and the ``service``/``amnesia`` fields).

    ``format`` is ``"json"`` (one JSON object per line) or ``"text"`` (structlog's console
    renderer, without colours unless the stream is a tty). ``level`` is one of ``trace``
    (= debug), ``debug``, ``info``, ``warn``, ``error``. ``stream`` defaults to ``sys.stderr``
    (looked up at each write). Raises ``ValueError`` naming a bad format or level.

    An embedder's call wins: a :class:`~ron_kernel.kernel.Kernel` started afterwards keeps this
    format, level and stream (and its config reloads of ``log.*`` leave them alone); it only
    sets the ``amnesia`` field.
    """
    _configure(format=format, level=level, amnesia=amnesia, service=service, stream=stream)
    _settings.explicit = True


def configure_from_config(*, format: str, level: str, amnesia: bool) -> None:
    """The kernel's own setup from ``log.*``: skipped (but for amnesia) after an embedder's."""
    if _settings.explicit:
        _settings.amnesia = bool(amnesia)
        return
    _configure(format=format, level=level, amnesia=amnesia, service=_settings.service,
               stream=_settings.stream)


def _configure(*, format: str, level: str, amnesia: bool, service: str,
               stream: TextIO | None) -> None:
    if format not in FORMATS:
        raise ValueError(f"log.format must be one of {FORMATS}, got {format!r}")
    number = _level_number(level)
    _settings.format = format
    _settings.level = number
    _settings.amnesia = bool(amnesia)
    _settings.service = service
    _settings.stream = stream
    _processors[:] = _build_processors(format, stream)


def set_level(level: str) -> None:
    """Change the log level at runtime (config reload); takes effect for every logger at once."""
    _settings.level = _level_number(level)


def reset_logging() -> None:
    """Back to the defaults (JSON, info, ``sys.stderr``), forgetting an embedder's choice."""
    _configure(format="json", level="info", amnesia=False, service="ron-kernel", stream=None)
    _settings.explicit = False


def set_service(service: str) -> None:
    """Set the ``service`` field of every following line (a worker process names itself)."""
    _settings.service = str(service)


def set_amnesia(on: bool) -> None:
    """Change the ``amnesia`` field of every following log line."""
    _settings.amnesia = bool(on)


def get_logger(component: str) -> Any:
    """Return a structlog logger for a kernel component (``component`` is a field of each line).

    ``log.info("config_updated", version=3, latency_ms=1.2)`` writes one line with the standard
    fields first. Safe to call before :func:`configure_logging`.
    """
    return _SafeBoundLogger(_stream_logger, _processors, {"component": component})


# ---------------------------------------------------------------------------- other writers


def loop_exception_handler(loop: Any, context: dict[str, Any]) -> None:
    """An asyncio exception handler that writes one JSON line instead of a stderr traceback.

    "Task was destroyed but it is pending", "Task exception was never retrieved", a failing
    callback: all become ``asyncio_error`` lines (the kernel installs it on its loop).
    """
    task = context.get("task") or context.get("future")
    get_logger("asyncio").error(
        "asyncio_error", reason=str(context.get("message", "")),
        task=printable(repr(task))[:300] if task is not None else None,
        exc_info=context.get("exception"))


class _StdlibHandler(stdlib_logging.Handler):
    """Routes stdlib ``logging`` records (aiohttp, asyncio, libraries) into the JSON stream."""

    def emit(self, record: stdlib_logging.LogRecord) -> None:
        method = ("error" if record.levelno >= 40 else "warning" if record.levelno >= 30
                  else "info" if record.levelno >= 20 else "debug")
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        getattr(get_logger(record.name), method)(
            "stdlib_log", reason=message, logger=record.name, exc_info=record.exc_info)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    get_logger("warnings").warning("python_warning", reason=str(message),
                                   category=category.__name__, at=f"{filename}:{lineno}")


def _unraisable(unraisable: Any) -> None:
    get_logger("python").error("unraisable_exception", reason=str(unraisable.err_msg or ""),
                               obj=printable(repr(unraisable.object))[:300],
                               exc_info=unraisable.exc_value)


def route_process_output() -> None:
    """Send stdlib logging, warnings and unraisable exceptions through the JSON pipeline.

    For a process the kernel owns (``ron-kernel run``): every line on stderr is then one JSON
    object (or one text line), including what asyncio prints about abandoned coroutines.
    """
    root = stdlib_logging.getLogger()
    if not any(isinstance(h, _StdlibHandler) for h in root.handlers):
        root.addHandler(_StdlibHandler())
    if root.level > stdlib_logging.WARNING or root.level == stdlib_logging.NOTSET:
        root.setLevel(stdlib_logging.WARNING)
    warnings.showwarning = _show_warning
    sys.unraisablehook = _unraisable
