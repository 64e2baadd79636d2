"""``ron-kernel run`` and ``ron-kernel config check``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from .._app_config import check_model
from .._appspec import AppImportError, check_spec
from .._appspec import load_app as load_app
from .._config import Config, peek
from .._exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .._logging import configure_from_config, flush_log_stream, get_logger, route_process_output
from .._text import printable
from ..config import config_argv, explain
from ..errors import ConfigError
from .demo import install_demo
from .process import ProcessSignals, leave_within, say

LEFTOVER_GRACE = 1.0
"""Seconds the tasks left after the drain (not supervised by the kernel) get to end once
cancelled; then the process leaves without them."""

_log = get_logger("cli")


def _loop_factory(flavor: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if flavor == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if flavor == "uvloop":
            raise SystemExit("ron-kernel: error: --loop uvloop needs the uvloop extra "
                             "(pip install 'ron-kernel[uvloop]')") from None
        return None
    return uvloop.new_event_loop


APP_CONFIG_NAME = "APP_CONFIG"
"""The module attribute that declares an ``--app`` factory's config model."""


def app_config_model(spec: str) -> type[Any] | None:
    """The app config model an ``--app MODULE:FACTORY`` declares, or ``None``.

    It is the module's ``APP_CONFIG`` (a pydantic v2 model class or a dataclass): its values
    come from ``[app]``, ``RONK_APP__*`` and ``--set app.*``, and the factory's kernel is a
    ``Kernel[APP_CONFIG]``. Call after :func:`load_app` (the module is then imported);
    ``ValueError`` naming the module when the attribute is not a model.
    """
    module_name = spec.partition(":")[0]
    module = importlib.import_module(module_name)
    model = getattr(module, APP_CONFIG_NAME, None)
    if model is None:
        return None
    try:
        check_model(model)
    except TypeError as exc:
        raise ValueError(f"--app {spec!r}: {module_name}.{APP_CONFIG_NAME}: {exc}") from None
    found: type[Any] = model
    return found


def _load(spec: str | None) -> tuple[Callable[..., Any] | None, type[Any] | None]:
    """``--app`` as (factory, app config model); ``ValueError`` for a usage error."""
    if not spec:
        return None, None
    factory = load_app(spec)
    return factory, app_config_model(spec)


DEMO_APP = "ron_kernel.cli.demo:install_demo"
"""What worker processes run when ``--workers N`` is given without ``--app``."""

WORKER_POOL = "worker"
"""The pool name of ``--workers N``: its children are ``worker/0`` .. ``worker/N-1``."""


async def _serve(config: Config[Any], argv: list[str], app: Callable[..., Any] | None,
                 model: type[Any] | None, signals: ProcessSignals,
                 spec: str | None = None) -> int:
    # Imported here, not at the top: `ron-kernel config check` shares this module and should not
    # pay for the kernel's HTTP stack (aiohttp) just to print a config.
    from ..kernel import Kernel

    kernel = Kernel(config, argv=argv, app_config=model)
    try:
        status = await _start_and_run(kernel, app, config, spec, signals)
    except asyncio.CancelledError:
        # A stop signal while the app factory or Kernel.start ran (the process's handler
        # cancelled this task): stop what started, a drain if the kernel was up.
        if signals.stop_signal is None:
            raise
        drained = kernel.state != "new"
        await kernel.shutdown()
        if not drained:
            _log.info("stopped_while_starting", signal=signals.stop_signal.name)
        status = signals.status(signals.stop_signal, drained=drained)
    signals.finish()
    await _leave_the_rest(status, kernel.metrics.counters, owns_process=signals.owns_process)
    return status


async def _start_and_run(kernel: Any, app: Callable[..., Any] | None, config: Config[Any],
                         spec: str | None, signals: ProcessSignals) -> int:
    if config.workers.count > 0:
        # the app runs in the worker processes, each under its own kernel; this one supervises
        kernel.supervise_workers(WORKER_POOL, app=spec or DEMO_APP,
                                 count=config.workers.count)
    elif app is None:
        install_demo(kernel)
    else:
        try:
            result = app(kernel)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # the user's factory: report it in one line, not a traceback
            say(f"ron-kernel: the --app factory failed: {type(exc).__name__}: "
                f"{' '.join(printable(str(exc)).split())}")
            return EXIT_FAILURE
    await kernel.start()
    # Everything allocated so far (modules, the kernel) lives for the whole process: freeze it
    # so full collections stop rescanning it. A gen-2 pass over the start-up heap costs 13-20 ms
    # of loop time here; after the freeze scrapes stay under the 10 ms loop-block target.
    gc.collect()
    gc.freeze()
    urls = kernel.urls()
    if urls:
        say(f"ron-kernel: observability on {urls['base']}  "
            f"(/metrics /healthz /readyz /status /events /ui)", sys.stdout)
        say(f"ron-kernel: try `curl {urls['readyz']}`, "
            f"`ron-kernel tail --url {urls['base']}` or open {urls['ui']}", sys.stdout)
    say("ron-kernel: running; SIGHUP reloads the config, Ctrl-C drains and exits", sys.stdout)
    # Ctrl-C/SIGTERM from here until run() takes them over: the process's handler (cli.process)
    # cancels this task and _serve drains. Should code on the way have absorbed that
    # cancellation, the signal is not lost: run() drains at once.
    if signals.stop_signal is not None:
        kernel.request_shutdown(f"signal {signals.stop_signal.name}")
    await kernel.run()
    return EXIT_OK


async def _leave_the_rest(status: int, counters: Any, *, owns_process: bool) -> None:
    """After the drain: the tasks nobody supervises get ``LEFTOVER_GRACE``, then are left.

    ``asyncio.Runner`` would cancel them and wait for each to finish: one that swallows its
    cancellation would hold the process forever after ``shutdown_complete``. Here they are
    cancelled and waited for a moment; those still running are logged by name
    (``tasks_left_behind``), counted (``tasks_aborted_total{kind="left_behind"}``), and the
    process leaves without them (``os._exit(status)`` once the logs are flushed: they are not
    waited for, nor are ``atexit`` handlers run). A watchdog then bounds the rest of the exit
    (``process.LEAVING_GRACE``). In process (``main(argv)``) they are only logged and counted.
    """
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in rest:
        task.cancel()
    if rest:
        await asyncio.wait(rest, timeout=LEFTOVER_GRACE)
    stuck = [t for t in rest if not t.done()]
    if stuck:
        counters.tasks_aborted_total.inc("left_behind", amount=len(stuck))
        names = sorted(printable(t.get_name()) for t in stuck)
        _log.warning("tasks_left_behind", count=len(stuck), tasks=names[:50],
                     grace_s=LEFTOVER_GRACE,
                     reason="tasks not supervised by the kernel ignored their cancellation; "
                            "the process leaves without them")
        if owns_process:
            flush_log_stream()
            os._exit(status)
    if owns_process:
        leave_within(status)


def run_command(args: argparse.Namespace, *, signals: ProcessSignals | None = None,
                dont_write_bytecode: bool | None = None) -> int:
    """Run the kernel until Ctrl-C; exit 1 (every problem listed) on an invalid config.

    ``signals``: the process's handlers (installed by ``main``); ``dont_write_bytecode``: the
    process's own setting, in force when amnesia is off (default: ``sys.dont_write_bytecode``
    now).
    """
    signals = signals if signals is not None else ProcessSignals()
    # --app's shape first: a usage error is one line on stderr, before anything else.
    if args.app:
        try:
            check_spec(args.app)
        except ValueError as exc:
            say(f"ron-kernel: error: {exc}")
            return EXIT_USAGE
    argv = config_argv(args)
    known = _prepare(argv, dont_write_bytecode)
    # Everything the process prints from here is a log line (JSON or text): warnings, asyncio's
    # abandoned tasks and never-awaited coroutines, unraisable exceptions. (Process-wide hooks:
    # only when this is the ron-kernel process, not a caller's Python process.)
    if signals.owns_process:
        route_process_output()
    loaded = _load_or_status("ron-kernel: error:", args.app, known)
    if isinstance(loaded, int):
        return loaded
    app, model = loaded
    try:
        config = Config.load(argv=argv, app=model)
    except ConfigError as exc:
        say(f"ron-kernel: {exc}")
        return EXIT_FAILURE
    configure_from_config(format=config.log.format, level=config.log.level,
                          amnesia=config.amnesia.enabled)
    try:
        return signals.run_loop(lambda: _serve(config, argv, app, model, signals, args.app),
                                loop_factory=_loop_factory(args.loop))
    except OSError as exc:
        say(f"ron-kernel: {printable(str(exc))}")
        return EXIT_FAILURE


def _prepare(argv: list[str], dont_write_bytecode: bool | None) -> dict[str, Any]:
    """Read ``amnesia.enabled`` and ``log.level`` before the app's module is imported.

    With amnesia on, or when it cannot be told yet (a source with a problem: the full load
    will say which), Python writes no bytecode (``__pycache__``) for the app or anything
    imported after it.
    """
    known = peek(("amnesia.enabled", "log.level"), argv=argv)
    own = sys.dont_write_bytecode if dont_write_bytecode is None else dont_write_bytecode
    sys.dont_write_bytecode = own or known.get("amnesia.enabled") is not False
    return known


def _load_or_status(prefix: str, spec: str | None, known: dict[str, Any],
                    ) -> tuple[Callable[..., Any] | None, type[Any] | None] | int:
    """:func:`_load`, or the exit status after saying why not: an app module that does not
    import is 1 (one line; the traceback too with ``--log-level debug`` or trace), a bad spec
    or a missing module a usage error (2)."""
    try:
        return _load(spec)
    except AppImportError as exc:  # before ValueError: it is one
        say(f"{prefix} {exc}")
        cause = exc.__cause__
        if known.get("log.level") in ("debug", "trace") and cause is not None:
            say("".join(traceback.format_exception(cause)).rstrip())
        return EXIT_FAILURE
    except ValueError as exc:
        say(f"{prefix} {exc}")
        return EXIT_USAGE


def config_check(args: argparse.Namespace, *, dont_write_bytecode: bool | None = None) -> int:
    """Print the effective config with the source of every value; 1 with the problems if bad.

    With ``--app MODULE:FACTORY`` the app keys (``app.*``) are validated by the model the
    module declares (``APP_CONFIG``) and listed with their sources too. With amnesia on, the
    app's module is imported without writing bytecode.
    """
    spec = getattr(args, "app", None)
    if spec:
        try:
            check_spec(spec)
        except ValueError as exc:
            say(f"config check: error: {exc}")
            return EXIT_USAGE
    argv = config_argv(args)
    known = _prepare(argv, dont_write_bytecode)
    loaded = _load_or_status("config check: error:", spec, known)
    if isinstance(loaded, int):
        return loaded
    _, model = loaded
    try:
        rows = explain(argv=argv, app=model)  # validates exactly as Config.load does
    except ConfigError as exc:
        say(f"config check: {exc}")
        return EXIT_FAILURE
    width = max(len(r.key) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    for row in rows:
        say(f"{row.key:<{width}}  {row.value:<{vwidth}}  # {row.source}", sys.stdout)
    say("config check: ok")
    return EXIT_OK
