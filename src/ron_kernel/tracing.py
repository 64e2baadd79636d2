"""Tracing spans through OpenTelemetry, when the ``telemetry`` extra is installed.

Install ``pip install 'ron-kernel[telemetry]'`` and configure an OpenTelemetry SDK in your
application; without opentelemetry-api, :func:`span` is a shared no-op costing one call::

    from ron_kernel.tracing import span

    with span("indexer.batch", items=12):
        ...

The kernel opens its own spans on cold paths: ``kernel.config.reload`` (each reload, with its
``outcome``), ``kernel.supervisor.restart`` (each restart of a crashed child) and
``kernel.metrics.scrape``. Nothing on the per-message path of the bus or a mailbox opens one.
"""

from ._tracing import span as span

__all__ = ["span"]
