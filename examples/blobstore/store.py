"""Content-addressed blobs on disk: one file per ``b3:<hex>`` id, verified on every read.

The id of a blob is ``b3:`` and the BLAKE3-256 digest of its bytes, in lower-case hex (64
digits). A blob lives at ``<data_dir>/<hex[:2]>/<hex>``; writes go to a temporary file in the
same directory, are flushed to disk, then renamed into place, so a reader never sees half a
blob and a crash leaves at most a ``*.tmp`` file (swept later). Any process given the same
directory serves every id; nothing else is kept.

The functions here block (disk I/O, hashing): the service calls them through
``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

from blake3 import blake3

__all__ = ["ID_PREFIX", "BadId", "BlobNotFound", "DigestMismatch", "Store", "blob_id",
           "parse_id"]

ID_PREFIX = "b3:"
_HEX = re.compile(r"[0-9a-f]{64}")
_TMP_SUFFIX = ".tmp"


class BadId(ValueError):
    """Text that is not a well-formed ``b3:<64 lower-case hex digits>`` id."""


class BlobNotFound(LookupError):
    """No blob with this id in the store."""


class DigestMismatch(Exception):
    """The bytes on disk do not hash to their id: the blob is corrupt and is never served."""

    def __init__(self, blob: str, actual: str) -> None:
        super().__init__(f"{blob} is corrupt on disk: its bytes hash to {actual}")
        self.blob = blob
        self.actual = actual


def blob_id(data: bytes) -> str:
    """The id of ``data``: ``b3:`` + its BLAKE3-256 digest in lower-case hex."""
    return ID_PREFIX + blake3(data).hexdigest()


def parse_id(text: str) -> str:
    """The 64 hex digits of a ``b3:<hex>`` id; :class:`BadId` saying what is wrong."""
    if not text.startswith(ID_PREFIX):
        raise BadId(f"an object id starts with {ID_PREFIX!r}")
    digest = text[len(ID_PREFIX):]
    if not _HEX.fullmatch(digest):
        raise BadId("an object id is b3: followed by 64 lower-case hex digits")
    return digest


class Store:
    """The blobs under one directory (``root``)."""

    root: Path
    """The data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, digest: str) -> Path:
        """Where the blob with these hex digits lives (whether it exists or not)."""
        return self.root / digest[:2] / digest

    def open(self) -> None:
        """Create the data directory if needed; ``OSError`` when it cannot be written."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"data_dir {str(self.root)!r} is not writable")

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; ``(id, created)``. Storing the same bytes again is a no-op.

        A blob already on disk is verified first: a corrupt copy is replaced by the good one.
        """
        digest = blake3(data).hexdigest()
        final = self.path_of(digest)
        try:
            self.get(digest)
        except (BlobNotFound, DigestMismatch):
            pass
        else:
            return ID_PREFIX + digest, False
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{digest}.{uuid.uuid4().hex}{_TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ID_PREFIX + digest, True

    def get(self, digest: str) -> bytes:
        """The blob's bytes after verifying their full digest.

        Raises :class:`BlobNotFound`, or :class:`DigestMismatch` when the bytes on disk do not
        hash to ``digest`` (they are never returned).
        """
        try:
            data = self.path_of(digest).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(ID_PREFIX + digest) from None
        actual = blake3(data).hexdigest()
        if actual != digest:
            raise DigestMismatch(ID_PREFIX + digest, ID_PREFIX + actual)
        return data

    def scan(self) -> dict[str, int]:
        """Every blob on disk by id, with its size (for the index; nothing is verified)."""
        found: dict[str, int] = {}
        if not self.root.is_dir():
            return found
        for fan in self.root.iterdir():
            if len(fan.name) != 2 or not fan.is_dir():
                continue
            for entry in fan.iterdir():
                if _HEX.fullmatch(entry.name) and entry.name.startswith(fan.name):
                    try:
                        found[ID_PREFIX + entry.name] = entry.stat().st_size
                    except FileNotFoundError:  # removed meanwhile
                        continue
        return found

    def sweep(self, older_than: float) -> int:
        """Remove temporary files older than ``older_than`` seconds (interrupted writes)."""
        removed = 0
        cutoff = time.time() - older_than
        for tmp in self.root.glob(f"*/.*{_TMP_SUFFIX}"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
