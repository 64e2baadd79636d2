"""The blob store's typed settings: the ``[app]`` table of the kernel's config.

Every field comes from the kernel's layers with the kernel's precedence (defaults < the file's
``[app]`` table < ``RONK_APP__<FIELD>`` < ``--set app.<field>=...``) and is validated with
the kernel's keys, fail-closed::

    [app]
    listen = "127.0.0.1:8080"
    data_dir = "/var/lib/blobstore"
    max_frame = 1048576          # bytes; a reload applies to the next request
    request_timeout = "5s"       # the kernel's duration syntax

``max_frame`` and ``request_timeout`` are read on every request, so a reload (SIGHUP, a file
change) applies to the next one. ``listen`` and ``data_dir`` are read when the service is built
(the kernel binds ``listen`` once, for every worker process): a change applies at the next
start of the process (the HTTP child logs that).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MAX_FRAME", "BlobstoreConfig", "split_listen"]

MAX_FRAME = 1 << 20
"""The OAP/1 frame limit: 1 MiB (a protocol constant; the storage chunk, 64 KiB, is not it)."""


def split_listen(addr: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as ``(host, port)``; ``ValueError`` saying why not."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8080 (port 0: any free port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"the port must be 0 to 65535, got {port!r}")
    return host, int(port)


class BlobstoreConfig(BaseModel):
    """The ``[app]`` table of the blob store (a frozen pydantic v2 model)."""

    model_config = ConfigDict(frozen=True)

    listen: str = "127.0.0.1:0"
    """Where the HTTP API listens (bound once by the kernel: ``kernel.listen``); port 0 picks a
    free port (logged as ``blobstore_listening``)."""
    data_dir: Path = Path("blobstore-data")
    """Where blobs live, one file per id: any process given this directory serves every id."""
    max_frame: Annotated[int, Field(gt=0, le=1 << 30)] = MAX_FRAME
    """The largest body ``PUT /o`` accepts, in bytes (larger: 413, never read whole)."""
    request_timeout: timedelta = timedelta(seconds=5)
    """How long a request may take to send its body, and ``GET /stats`` to get its answer."""
    sweep_interval: timedelta = timedelta(minutes=1)
    """How often the store removes temporary files that an interrupted ``PUT`` left behind."""

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("request_timeout", "sweep_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value
