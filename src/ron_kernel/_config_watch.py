"""Watching one config file: the watcher behind ``ConfigCell.watch`` (a private part).

What it must survive, and how:

* **Editors and config managers** write a temporary file and rename it over the old one; the
  kubelet updates a ConfigMap volume by writing a new timestamped directory and renaming a new
  ``..data`` symlink over the old one (``Config.toml -> ..data/Config.toml``). Neither touches
  the file's own name, so the watcher reacts to *any* change in the file's directory (and in
  the directory its symlinks lead to), then decides by the resolved file's identity:
  ``realpath`` + ``stat`` (a cheap look, compared often) and, when the look changed, a SHA-256
  of the content. Only a change of content asks for a reload.
* **Half-written files**: before it reads, the watcher waits until the file is stable -- two
  looks ``quiet`` seconds apart see the same realpath, inode, size and mtime.
* **The directory going away** (deleted, unmounted, re-created): the watcher polls for it, then
  resumes watching the new one. A directory replaced under the same name is noticed within
  :data:`CHECK_EVERY` seconds even when no event arrives.
* **Its own failures**: an unexpected error is logged, shown in :attr:`FileWatcher.state` as
  ``failed: <reason>`` and retried with a capped backoff. The watcher never ends silently; it
  ends only when cancelled (state ``stopped``).

Reloading is not done here: the watcher calls ``on_change(trigger)`` (``ConfigCell``'s
coalescing ``request_reload``), which returns at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import awatch

from ._config import MAX_FILE_BYTES
from ._logging import get_logger
from ._text import cap, printable, show_path

__all__ = ["POLLING", "STOPPED", "WAITING", "WATCHING", "FileIdentity", "FileWatcher",
           "identify", "look"]

_log = get_logger("config")

WATCHING = "watching"
"""Directory events (watchfiles) drive the watcher."""
POLLING = "polling"
"""The watcher polls the file every ``poll_interval`` seconds."""
WAITING = "waiting_for_directory"
"""The file's directory is missing; the watcher polls until it is back."""
STOPPED = "stopped"
"""Not running: never started, or cancelled."""
FAILED = "failed: "
"""Prefix of the state while the watcher retries after an unexpected error."""

CHECK_EVERY = 0.5
"""Seconds between the watcher's own looks while no event arrives (directory replaced?)."""
SETTLE_MAX = 5.0
"""A file still changing after this many seconds is read anyway (the parser guards it)."""
RETRY_MIN, RETRY_MAX = 0.1, 5.0
"""Backoff, in seconds, between attempts after an unexpected failure."""
VANISHED_TOLERATED = 3
"""A watched directory vanishing as watching starts is a race, not a failure, this many times
in a row; after that it is reported like any other error."""


@dataclass(frozen=True, slots=True)
class Look:
    """One cheap look at the file: where its symlinks lead and what ``stat`` says there."""

    realpath: str
    dev: int = -1
    ino: int = -1
    size: int = -1
    mtime_ns: int = -1

    @property
    def present(self) -> bool:
        """Whether the file existed when looked at."""
        return self.ino != -1


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """A look and the SHA-256 of the content (``None``: missing or unreadable)."""

    look: Look
    digest: str | None


def look(path: Path) -> Look:
    """``realpath`` + ``stat`` of ``path``; never raises (a missing file has ``ino == -1``)."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        real = os.fspath(path)
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return Look(real)
    return Look(real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def identify(path: Path) -> FileIdentity:
    """The look and content hash of ``path`` (blocking: reads up to 1 MiB; run it off the loop)."""
    seen = look(path)
    if not seen.present:
        return FileIdentity(seen, None)
    try:
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read(MAX_FILE_BYTES + 1)).hexdigest()
    except (OSError, ValueError):
        digest = None
    return FileIdentity(seen, digest)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dir_mark(path: str) -> tuple[int, int] | None:
    """Which directory a path names right now (device, inode), or ``None`` when it is gone."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


class FileWatcher:
    """Calls ``on_change(trigger)`` whenever the content of ``path`` changes; see the module.

    ``initial`` is the identity the caller last read (so a change between the caller's read
    and the start of :meth:`run` is not missed). One watcher runs at most once at a time.
    """

    def __init__(self, path: Path, on_change: Callable[[str], object], *,
                 initial: FileIdentity | None = None) -> None:
        self._path = path
        self._dir = path.parent
        self._on_change = on_change
        self._settled = initial
        self._state = STOPPED
        self._running = False
        self._said_polling = False

    @property
    def state(self) -> str:
        """``watching``, ``polling``, ``waiting_for_directory``, ``stopped`` or ``failed: ...``."""
        return self._state

    async def run(self, *, polling: bool, quiet: float, poll_interval: float) -> None:
        """Watch until cancelled; never returns otherwise, never raises but cancellation."""
        if self._running:
            raise RuntimeError(f"{show_path(self._path)} is already being watched")
        self._running = True
        retry = RETRY_MIN
        vanished = 0  # watched directories gone as watching began, in a row
        try:
            if self._settled is None:
                self._settled = await asyncio.to_thread(identify, self._path)
            while True:
                try:
                    if not _is_dir(self._dir):
                        await self._wait_for_directory(quiet, poll_interval)
                    elif polling:
                        await self._poll(quiet, poll_interval)
                    else:
                        await self._watch(quiet, poll_interval)
                    retry = RETRY_MIN
                    vanished = 0
                except Exception as exc:  # anything else: say so, and keep trying
                    if not _is_dir(self._dir):
                        continue  # it vanished under us: not a failure, wait for it
                    if isinstance(exc, FileNotFoundError) and vanished < VANISHED_TOLERATED:
                        # e.g. the kubelet removing the old data directory just after a swap:
                        # look again (the next attempt watches what is there now)
                        vanished += 1
                        await asyncio.sleep(RETRY_MIN)
                        continue
                    reason = printable(cap(f"{type(exc).__name__}: {exc}", 300))
                    self._state = FAILED + reason
                    _log.error("config_watch_failed", path=show_path(self._path),
                               error=reason, retry_in_s=retry)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, RETRY_MAX)
        finally:
            self._state = STOPPED
            self._running = False

    # ------------------------------------------------------------------ the three modes

    async def _wait_for_directory(self, quiet: float, poll_interval: float) -> None:
        self._state = WAITING
        _log.warning("config_watch_directory_missing", path=show_path(self._dir),
                     action="polling until it is back; the current config is kept")
        while not _is_dir(self._dir):  # noqa: ASYNC110 - polls the file system, no event
            await asyncio.sleep(poll_interval)
        _log.info("config_watch_directory_back", path=show_path(self._dir))
        await self._check("directory", quiet)

    async def _poll(self, quiet: float, poll_interval: float) -> None:
        self._state = POLLING
        await self._check("poll", quiet)
        while _is_dir(self._dir):
            await asyncio.sleep(poll_interval)
            await self._check("poll", quiet)

    def _watched_dirs(self) -> tuple[str, ...]:
        # the file's directory (where editors rename and the kubelet swaps ..data) and the
        # directory its symlinks lead to (where an in-place edit of the target happens)
        dirs = [os.fspath(self._dir)]
        target = self._settled.look.realpath if self._settled else None
        if target and _is_dir(Path(target).parent):
            dirs.append(os.path.dirname(target))
        return tuple(dict.fromkeys(dirs))

    async def _watch(self, quiet: float, poll_interval: float) -> None:
        dirs = self._watched_dirs()
        if not all(_utf8(d) for d in dirs):
            # watchfiles takes UTF-8 paths only (neither bytes nor surrogate escapes): poll
            if not self._said_polling:
                self._said_polling = True
                _log.info("config_watch_polling", path=show_path(self._dir),
                          reason="the path is not UTF-8; file events cannot be watched")
            await self._poll(quiet, poll_interval)
            return
        self._state = WATCHING
        marks = {d: _dir_mark(d) for d in dirs}
        names = {self._path.name}
        if self._settled is not None:
            names.add(os.path.basename(self._settled.look.realpath))
        await self._check("file", quiet)
        step_ms = max(1, round(quiet * 1000))
        stop = asyncio.Event()
        try:
            async for changes in awatch(*dirs, step=step_ms, debounce=max(1000, step_ms * 10),
                                        recursive=False, stop_event=stop,
                                        rust_timeout=round(CHECK_EVERY * 1000),
                                        yield_on_timeout=True):
                if any(_dir_mark(d) != mark for d, mark in marks.items()):
                    return  # a directory was removed or replaced: start again
                # an event naming the file itself is checked by content even if the look
                # is unchanged (an in-place rewrite within one mtime tick, same size)
                force = any(os.path.basename(p) in names for _, p in changes)
                # watchfiles yields a batch only after `step` (= quiet) ms without events
                await self._check("file", quiet, force=force, quiet_already=bool(changes))
                if self._watched_dirs() != dirs:
                    return  # the symlink now leads elsewhere: watch the new directory
        finally:
            stop.set()

    # ------------------------------------------------------------------ the decision

    async def _check(self, trigger: str, quiet: float, *, force: bool = False,
                     quiet_already: bool = False) -> None:
        """Ask for a reload when the file's content differs from the last one seen.

        The file is read only once stable: two looks agree after a quiet period -- waited
        here, or (``quiet_already``) just observed by watchfiles' debounce, in which case the
        two looks are the ones taken before and while reading it.
        """
        settled = self._settled
        before = look(self._path)
        if not force and settled is not None and before == settled.look:
            return
        if not quiet_already:
            await self._settle(quiet)
            before = look(self._path)
        now = await asyncio.to_thread(identify, self._path)
        if now.look != before:  # it changed while we read it: not stable after all
            await self._settle(quiet)
            now = await asyncio.to_thread(identify, self._path)
        self._settled = now
        if settled is None or now.digest != settled.digest:
            self._on_change(trigger)

    async def _settle(self, quiet: float) -> None:
        """Return once two looks ``quiet`` seconds apart agree (at most ``SETTLE_MAX`` s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_MAX
        before = look(self._path)
        while True:
            await asyncio.sleep(quiet)
            now = look(self._path)
            if now == before or loop.time() >= deadline:
                return
            before = now
