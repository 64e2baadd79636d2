"""``ron-kernel run`` and ``ron-kernel config check``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import signal
import sys
from collections.abc import Callable
from typing import Any

from .._app_config import check_model
from .._appspec import load_app as load_app
from .._config import Config
from .._exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .._signals import install_handlers
from ..config import config_argv, explain
from ..errors import ConfigError
from .demo import install_demo


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
                 model: type[Any] | None, spec: str | None = None) -> int:
    # Imported here, not at the top: `ron-kernel config check` shares this module and should not
    # pay for the kernel's HTTP stack (aiohttp) just to print a config.
    from ..kernel import Kernel

    kernel = Kernel(config, argv=argv, app_config=model)
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
            print(f"ron-kernel: the --app factory failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return EXIT_FAILURE
    await kernel.start()
    # Everything allocated so far (modules, the kernel) lives for the whole process: freeze it
    # so full collections stop rescanning it. A gen-2 pass over the start-up heap costs 13-20 ms
    # of loop time here; after the freeze scrapes stay under the 10 ms loop-block target.
    gc.collect()
    gc.freeze()
    # From the first line printed, Ctrl-C/SIGTERM drain: until run() takes the signals over (a
    # loop step later), they ask the kernel to shut down, and run() then drains and returns.
    # Without this, a Ctrl-C right after "running" met asyncio.Runner's handler: exit 130.
    restore = install_handlers(asyncio.get_running_loop(), (signal.SIGINT, signal.SIGTERM),
                               lambda sig: kernel.request_shutdown(f"signal {sig.name}"))
    try:
        urls = kernel.urls()
        if urls:
            print(f"ron-kernel: observability on {urls['base']}  "
                  f"(/metrics /healthz /readyz /status /events /ui)", flush=True)
            print(f"ron-kernel: try `curl {urls['readyz']}`, "
                  f"`ron-kernel tail --url {urls['base']}` or open {urls['ui']}", flush=True)
        print("ron-kernel: running; SIGHUP reloads the config, Ctrl-C drains and exits",
              flush=True)
        await kernel.run()
    finally:
        restore()
    return EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """Run the kernel until Ctrl-C; exit 1 (every problem listed) on an invalid config."""
    # --app first: a usage error is one line on stderr, before any config log line.
    try:
        app, model = _load(args.app)
    except ValueError as exc:
        print(f"ron-kernel: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    argv = config_argv(args)
    try:
        config = Config.load(argv=argv, app=model)
    except ConfigError as exc:
        print(f"ron-kernel: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
            return runner.run(_serve(config, argv, app, model, args.app))
    except OSError as exc:
        print(f"ron-kernel: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        # Ctrl-C before the kernel was up (asyncio.Runner turns it into KeyboardInterrupt)
        print("ron-kernel: interrupted while starting", file=sys.stderr)
        return EXIT_INTERRUPTED


def config_check(args: argparse.Namespace) -> int:
    """Print the effective config with the source of every value; 1 with the problems if bad.

    With ``--app MODULE:FACTORY`` the app keys (``app.*``) are validated by the model the
    module declares (``APP_CONFIG``) and listed with their sources too.
    """
    try:
        _, model = _load(getattr(args, "app", None))
    except ValueError as exc:
        print(f"config check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    argv = config_argv(args)
    try:
        rows = explain(argv=argv, app=model)  # validates exactly as Config.load does
    except ConfigError as exc:
        print(f"config check: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    width = max(len(r.key) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    for row in rows:
        print(f"{row.key:<{width}}  {row.value:<{vwidth}}  # {row.source}")
    print("config check: ok", file=sys.stderr)
    return EXIT_OK
