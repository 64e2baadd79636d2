"""A content-addressed blob store on the kernel: the service-author features, end to end.

Run it from the repository root (``examples`` is not installed)::

    ron-kernel run --app examples.blobstore:build --set app.listen=127.0.0.1:8080
    curl -sT README.md http://127.0.0.1:8080/o          # {"id": "b3:<hex>", ...}
    curl -s http://127.0.0.1:8080/o/b3:<hex>            # the bytes, verified before served
    curl -s http://127.0.0.1:8080/stats                 # {"objects": 1, "bytes": ..., ...}

What it shows:

* a typed app config (:class:`~examples.blobstore.config.BlobstoreConfig`, the ``[app]``
  table, declared to ``ron-kernel run --app`` by this module's :data:`APP_CONFIG`), whose
  ``max_frame`` hot-reloads (SIGHUP, a file change) and applies to the next request;
* three supervised children started in order with ``depends_on``: ``store`` (opens the data
  directory), ``index`` (needs the store: it rebuilds its table from disk) and ``http`` (needs
  both);
* a mailbox request/reply between the HTTP handlers and the index (``GET /stats``);
* waits that end at shutdown: ``ctx.sleep``, ``ctx.wait`` and ``ctx.config_changes``;
* the service's own metrics on the kernel's ``/metrics`` (``kernel.metrics.registry``):
  ``blobstore_rejects_total{reason}`` and ``blobstore_request_seconds{op,code}``;
* every core: ``--workers 2`` runs it in two worker processes serving one port (the kernel's
  listening socket, bound once by the parent; docs/WORKERS.md).
"""

from __future__ import annotations

from ron_kernel.kernel import Kernel
from ron_kernel.mailbox import Mailbox

from .config import BlobstoreConfig
from .index import IndexMessage, run_index
from .service import LISTEN_SOCKET, BlobstoreMetrics, run_http, run_store
from .store import Store

__all__ = ["APP_CONFIG", "Blobstore", "BlobstoreConfig", "build"]

APP_CONFIG = BlobstoreConfig
"""The config model of the ``[app]`` keys: ``ron-kernel run --app`` reads it from here."""

INDEX_MAILBOX_CAPACITY = 256


class Blobstore:
    """What the blob store's children share: the store, the index mailbox, the metrics.

    ``url`` is the HTTP API's base URL once the ``http`` child listens (``None`` before).
    """

    store: Store
    """The blobs on disk (``data_dir`` is read once, when the service is built)."""
    mailbox: Mailbox[IndexMessage]
    """The index child's mailbox."""
    metrics: BlobstoreMetrics
    """The service's series, on the kernel's registry."""
    url: str | None
    """``http://host:port`` of the API once it listens."""

    def __init__(self, kernel: Kernel[BlobstoreConfig]) -> None:
        cfg = kernel.config.app
        if not isinstance(cfg, BlobstoreConfig):
            raise TypeError("the blob store needs Kernel(app_config=BlobstoreConfig) "
                            "(ron-kernel run --app examples.blobstore:build does that)")
        self.store = Store(cfg.data_dir)
        self.mailbox = Mailbox(INDEX_MAILBOX_CAPACITY, name="blobstore-index",
                               metrics=kernel.metrics)
        self.metrics = BlobstoreMetrics(kernel.metrics.registry)
        self.url = None

    def _listening(self, url: str) -> None:
        self.url = url


def build(kernel: Kernel[BlobstoreConfig]) -> Blobstore:
    """The ``--app`` factory: add the ``store``, ``index`` and ``http`` children to ``kernel``.

    The HTTP port is the kernel's listening socket :data:`~.service.LISTEN_SOCKET`, bound here
    on ``app.listen``: with ``ron-kernel run --workers N`` the parent binds it once and every
    worker serves it (any worker serves any id: the blobs are files in ``data_dir``).
    """
    service = Blobstore(kernel)
    # app.listen is the operator's explicit choice, every interface included
    kernel.listen(LISTEN_SOCKET, kernel.config.app.listen, allow_unspecified=True)
    store, mailbox, metrics = service.store, service.mailbox, service.metrics
    kernel.supervise("store", lambda ctx: run_store(ctx, store))
    kernel.supervise("index", lambda ctx: run_index(ctx, store, mailbox),
                     depends_on=("store",))
    kernel.supervise("http", lambda ctx: run_http(ctx, store, mailbox, metrics,
                                                  on_listening=service._listening),
                     depends_on=("store", "index"))
    return service
