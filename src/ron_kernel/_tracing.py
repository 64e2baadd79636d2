"""Tracing spans ``kernel.<component>.<operation>`` through opentelemetry-api, when installed.

Install the ``telemetry`` extra (``pip install 'ron-kernel[telemetry]'``) and configure an
OpenTelemetry SDK in the application; the kernel only creates spans. Without opentelemetry-api,
:func:`span` returns one shared no-op context manager (a function call, nothing else).

Spans are for cold paths (config reload, supervisor restart, a scrape): nothing on the
per-message path of the bus or a mailbox opens one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from ._logging import current_corr_id

_otel_trace: Any
try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # the telemetry extra is not installed
    _otel_trace = None

_provider: Any = None


class _NoSpan(AbstractContextManager[None]):
    """The shared do-nothing span used when opentelemetry is absent."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def enabled() -> bool:
    """Whether opentelemetry-api is importable (spans are real, if an SDK is configured)."""
    return _otel_trace is not None


def use_tracer_provider(provider: Any) -> None:
    """Send kernel spans to ``provider`` instead of OpenTelemetry's global one (``None`` resets).

    For tests and embedders that keep several providers; most applications configure the global
    provider and never call this.
    """
    global _provider
    _provider = provider


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span called ``name`` with ``attributes``, as a context manager yielding the span.

    A no-op costing one call when opentelemetry-api is not installed, or when no tracer
    provider was configured (OpenTelemetry's global provider is still its proxy): nothing would
    record the span. The bound ``corr_id`` (see :func:`ron_kernel.logging.bind_corr_id`) is
    added as the ``corr_id`` attribute. Exceptions are recorded on the span and re-raised.
    """
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    return _real_span(tracer, name, attributes)


def kernel_span(component: str, operation: str, **attributes: Any) -> AbstractContextManager[Any]:
    """The kernel's own spans: ``kernel.<component>.<operation>`` (see :func:`span`)."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    return _real_span(tracer, f"kernel.{component}.{operation}", attributes)


_tracers: dict[int, tuple[Any, Any]] = {}  # id(provider) -> (provider, tracer)


def _tracer() -> Any:
    """The tracer of the configured provider (cached), or ``None`` when spans go nowhere."""
    if _otel_trace is None:
        return None
    provider = _provider if _provider is not None else _otel_trace.get_tracer_provider()
    if isinstance(provider, _otel_trace.ProxyTracerProvider):
        return None  # no SDK configured yet: a span would cost ~0.1 ms and record nothing
    cached = _tracers.get(id(provider))
    if cached is None or cached[0] is not provider:
        cached = _tracers[id(provider)] = (provider, provider.get_tracer("ron_kernel"))
    return cached[1]


@contextmanager
def _real_span(tracer: Any, name: str, attrs: dict[str, Any]) -> Iterator[Any]:
    corr_id = current_corr_id()
    if corr_id is not None:
        attrs["corr_id"] = corr_id
    with tracer.start_as_current_span(name, attributes=attrs) as sp:
        yield sp
