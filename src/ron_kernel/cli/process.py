"""The ``ron-kernel`` process's signals, from the first line of ``main`` to the last.

Installed before anything heavy is imported (this module loads no asyncio), so the process
never meets a signal's default action while it starts or after the kernel stopped:

* **SIGHUP** is deferred (:class:`~ron_kernel._plain_signals.DeferredSignal`): before the
  kernel's config cell is ready it is remembered, and the cell, once installed, reloads once;
  after the kernel stopped it is harmless.
* **SIGINT/SIGTERM**, the first one, stop the process in order. Before the event loop runs
  (imports, config, the app's module) they unwind the start-up code (:class:`Interrupted`, a
  ``KeyboardInterrupt``); while the loop runs and the kernel is not waiting for signals itself
  (the app factory, ``Kernel.start``) they cancel the main task, which stops whatever started
  (a drain if the kernel was up). Once the kernel waits for signals it handles them itself.
  After the drain they change nothing: the process is already leaving, within a bounded time.
* A **second** SIGINT/SIGTERM while stopping exits at once with status 130, without the loop.

Exit statuses when a signal ends the command before it finished: ``run`` exits 0 after
SIGTERM (an orderly stop; a drain when the kernel was up) and 0 after a SIGINT that drained a
started kernel, 130 after a SIGINT before the kernel was up; the other commands exit 130
(SIGINT) or 143 (SIGTERM), 128 + the signal, since they did not give their answer.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, TextIO

from .._exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED
from .._plain_signals import DeferredSignal, exit_now, install_plain

__all__ = ["Interrupted", "ProcessSignals", "leave_within", "make_exit_honest", "say"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

LEAVING_GRACE = 2.0
"""Seconds the end of the process (closing the loop, the default executor's threads, other
threads, ``atexit`` handlers, the interpreter's own shutdown) may take once the command is done
(after the drain, for ``run``); then it leaves anyway, with the status it had."""


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived while start-up code ran: unwinds it like Ctrl-C does.

    A ``KeyboardInterrupt`` so that nothing in between (the import system, asyncio's callbacks)
    swallows it; ``status`` is the exit status the command ends with.
    """

    def __init__(self, sig: signal.Signals, status: int) -> None:
        super().__init__(sig.name)
        self.sig = sig
        self.status = status


class ProcessSignals:
    """The process-wide SIGHUP/SIGINT/SIGTERM handlers of one ``main`` call (see the module)."""

    def __init__(self, *, owns_process: bool = False, command: str = "") -> None:
        self.owns_process = owns_process
        """Whether this is the ``ron-kernel`` process itself (``main()`` without ``argv``): it
        may then leave with ``os._exit`` when something outside the kernel holds it."""
        self.hup = DeferredSignal()
        self.stop_signal: signal.Signals | None = None
        """The first SIGINT/SIGTERM this object handled."""
        self.command = command
        """The command being run (``run`` ends 0 after SIGTERM, the others 143)."""
        self._phase = "boot"  # boot -> loop -> done
        self._on_stop: Callable[[], None] | None = None
        self._undo: Callable[[], None] | None = None

    def install(self) -> None:
        """Install the handlers (main thread only; elsewhere nothing is installed)."""
        try:
            undo_hup = install_plain((signal.SIGHUP,), self.hup)
            undo_stop = install_plain(STOP_SIGNALS, self._stop)
        except ValueError:  # not the main thread: an embedder's main(); leave signals alone
            return

        def undo() -> None:
            undo_stop()
            undo_hup()

        self._undo = undo

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        if self._undo is not None:
            self._undo()
            self._undo = None

    def status(self, sig: signal.Signals, *, drained: bool = False) -> int:
        """The exit status after ``sig`` stopped the command (``drained``: a kernel drained)."""
        if self.command == "run" and (drained or sig is signal.SIGTERM):
            return EXIT_OK
        return EXIT_INTERRUPTED if sig is signal.SIGINT else EXIT_TERMINATED

    def enter_loop(self, on_stop: Callable[[], None]) -> None:
        """The event loop runs: a first stop signal calls ``on_stop`` (it must be signal-safe,
        e.g. ``loop.call_soon_threadsafe``) instead of raising."""
        self._phase, self._on_stop = "loop", on_stop

    def run_loop(self, main: Callable[[], Awaitable[int]], *,
                 loop_factory: Callable[[], Any] | None = None) -> int:
        """Run ``main()`` in a new event loop; a first stop signal cancels it (see the module).

        Returns what ``main()`` returns; when the cancellation reaches it unhandled, the status
        for the signal (:meth:`status`). ``main`` may catch the cancellation to stop in order
        and return a status of its own.
        """
        import asyncio  # here: the handlers must be installed before asyncio is loaded

        async def guarded() -> int:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()

            def cancel() -> None:
                if task is not None and not task.done() and not self.finished:
                    task.cancel()

            def on_stop() -> None:
                try:
                    loop.call_soon_threadsafe(cancel)
                except RuntimeError:  # the loop is closing: the command is ending anyway
                    pass

            self.enter_loop(on_stop)
            try:
                return await main()
            except asyncio.CancelledError:
                if self.stop_signal is None:
                    raise
                return self.status(self.stop_signal)

        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                return runner.run(guarded())
        finally:
            self.finish()

    def finish(self) -> None:
        """The kernel drained (or the command is done): stop signals change nothing now."""
        self._phase, self._on_stop = "done", None

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` was called."""
        return self._phase == "done"

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self._phase == "done":
            return  # already leaving, in a bounded time, with the status the stop earned
        if self.stop_signal is not None:
            exit_now(f"ron-kernel: second {sig.name} while stopping; exiting now",
                     EXIT_INTERRUPTED)
        self.stop_signal = sig
        if self._phase == "boot":
            raise Interrupted(sig, self.status(sig))
        if self._on_stop is not None:
            self._on_stop()


def leave_at_exit() -> None:
    """The end of ``main`` in the ``ron-kernel`` process: nothing may change the exit now.

    The interpreter resets Python-level handlers to their default action while it shuts down
    (SIGHUP's would kill, SIGTERM's too); ignoring the three signals keeps the status the
    command earned. The exit is bounded by :func:`leave_within`.
    """
    for sig in (signal.SIGHUP, *STOP_SIGNALS):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread
            return


_watchdog: list[float] = []


def leave_within(status: int, grace: float = LEAVING_GRACE) -> None:
    """Make sure the process is gone ``grace`` seconds from now, with ``status``.

    A daemon thread waits, then logs ``exit_stalled`` (with the threads still running) and
    calls ``os._exit(status)``. Started once; when the exit goes well it is simply never
    heard of.
    """
    if _watchdog:
        return
    _watchdog.append(grace)
    threading.Thread(target=_exit_watchdog, args=(status, grace), daemon=True,
                     name="ron-kernel-exit-watchdog").start()


def _exit_watchdog(status: int, grace: float) -> None:
    time.sleep(grace)
    threads = sorted(t.name for t in threading.enumerate()
                     if not t.daemon and t is not threading.main_thread())
    try:
        logging = sys.modules.get("ron_kernel._logging")  # never an import in this state
        if logging is not None:
            logging.get_logger("cli").warning(
                "exit_stalled", grace_s=grace, threads=threads[:50],
                reason="the process took longer than its grace to end; leaving anyway")
            logging.flush_log_stream()
    finally:
        os._exit(status)


def say(text: str, stream: TextIO | None = None) -> None:
    """Print one line for people (default: stderr); never raises.

    A closed or broken stream (a log pipe whose reader exited) must not change how the command
    ends; text the stream cannot encode is escaped.
    """
    target = sys.stderr if stream is None else stream
    try:
        try:
            target.write(text + "\n")
        except UnicodeEncodeError:
            target.write(text.encode("ascii", "backslashreplace").decode() + "\n")
        target.flush()
    except (OSError, ValueError, AttributeError):
        pass


def make_exit_honest() -> None:
    """Point a broken stdout/stderr at /dev/null, so the interpreter's last flush succeeds.

    Otherwise Python's final flush of a stream whose reader went away fails, and the process
    exit status would report that instead of how the command ended.
    """
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            if stream is not None:
                stream.flush()
            broken = _reader_gone(fd)
        except (OSError, ValueError):
            broken = True
        if broken:
            _to_devnull(fd)


def _reader_gone(fd: int) -> bool:
    """Whether ``fd`` is a pipe/socket whose reader went away (``POLLERR``/``POLLHUP``)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
               for _, ev in poller.poll(0))


def _to_devnull(fd: int) -> None:
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)
