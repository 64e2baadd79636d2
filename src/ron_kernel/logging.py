"""Structured logs: one JSON object per line (or text for people), with redaction built in.

The kernel logs through this module; your services can too, and their lines carry the same
standard fields (``ts``, ``level``, ``service``, ``event``, ``corr_id``, ``amnesia``)::

    from ron_kernel.logging import bind_corr_id, configure_logging, get_logger

    configure_logging(format="json", level="info")     # optional: the kernel sets it from config
    log = get_logger("indexer")
    with bind_corr_id() as corr_id:
        log.info("batch_indexed", items=12)              # every line in the block carries corr_id

Values under secret-like names (``api_token``, ``password``, ``dsn``, ...) and credentials in
URLs are redacted in every line. Calling :func:`configure_logging` yourself wins over the
kernel's ``log.*`` config: a ``Kernel`` started afterwards keeps your format, level and stream.
Logging never raises into the caller (a failing stream drops and counts the line).
"""

from ._logging import bind_corr_id as bind_corr_id
from ._logging import configure_logging as configure_logging
from ._logging import get_logger as get_logger

__all__ = [
    "bind_corr_id",
    "configure_logging",
    "get_logger",
]
