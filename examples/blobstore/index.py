"""The index: which ids the store holds and how many bytes, kept by one child.

The ``index`` child starts after the ``store`` child reported ready (``depends_on``), rebuilds
its table from the data directory, reports ready, then serves its mailbox until shutdown:

* :class:`Added` (sent with ``try_send`` by ``PUT /o``, never waiting) records a blob;
* a :class:`~ron_kernel.mailbox.Request` of :class:`StatsQuery` (``mailbox.request(...,
  timeout)`` from ``GET /stats``) is answered with :class:`Stats`.

Only this child touches the table: no locks. If it crashes, the supervisor restarts it and it
rebuilds the table from disk (what was queued meanwhile is applied again: the table is keyed by
id, so nothing counts twice).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ron_kernel import Config
from ron_kernel.errors import Canceled, Closed
from ron_kernel.logging import get_logger
from ron_kernel.mailbox import Mailbox, Request
from ron_kernel.supervisor import ChildContext

from .config import BlobstoreConfig
from .store import Store

__all__ = ["Added", "Index", "IndexMessage", "Stats", "StatsQuery", "run_index"]


@dataclass(frozen=True, slots=True)
class Added:
    """A blob was stored (or stored again)."""

    blob_id: str
    size: int


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """Ask the index for its totals (sent as a mailbox request)."""


@dataclass(frozen=True, slots=True)
class Stats:
    """The index's answer: how many blobs, how many bytes in all."""

    objects: int
    bytes: int


IndexMessage = Added | Request[StatsQuery, Stats]
"""What the index mailbox carries."""

_log = get_logger("blobstore.index")


class Index:
    """Blob sizes by id, with running totals (owned by the ``index`` child alone)."""

    def __init__(self, entries: dict[str, int] | None = None) -> None:
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        for blob, size in (entries or {}).items():
            self.add(blob, size)

    def add(self, blob: str, size: int) -> None:
        """Record ``blob`` (idempotent: an id already known is not counted twice)."""
        self._bytes += size - self._sizes.get(blob, 0)
        self._sizes[blob] = size

    def stats(self) -> Stats:
        """The totals."""
        return Stats(objects=len(self._sizes), bytes=self._bytes)


async def run_index(ctx: ChildContext[Config[BlobstoreConfig]], store: Store,
                    mailbox: Mailbox[IndexMessage]) -> None:
    """The ``index`` child: rebuild from disk, report ready, serve the mailbox until shutdown."""
    try:
        index = Index(await ctx.wait(asyncio.to_thread(store.scan)))
    except Canceled:
        return
    stats = index.stats()
    _log.info("index_ready", objects=stats.objects, bytes=stats.bytes)
    ctx.ready()
    while True:
        try:
            message = await ctx.wait(mailbox.recv())
        except (Canceled, Closed):
            return  # shutdown: what is still queued is rebuilt from disk at the next start
        if isinstance(message, Added):
            index.add(message.blob_id, message.size)
        else:
            message.reply(index.stats())
