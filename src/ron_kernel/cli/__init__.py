"""The ``ron-kernel`` command: run a kernel, check a config, follow events, see and act on
it, list tasks.

The whole command line lives in this package: the parser and :func:`main` here,
``ron-kernel run`` and ``config check`` in :mod:`.run`, ``ron-kernel tail`` in :mod:`.tail`,
``ron-kernel tasks`` in :mod:`.tasks`, ``ron-kernel status`` in :mod:`.status`,
``ron-kernel ctl`` in :mod:`.ctl`, the built-in demo services of ``ron-kernel run`` in
:mod:`.demo`. Exit statuses come from
:mod:`ron_kernel._exitcodes`.

The subcommands are imported lazily on purpose: ``ron-kernel run`` must reach ``/readyz`` 200
quickly, ``ron-kernel --help`` should not pay for aiohttp or prometheus_client, and the first
line of :func:`main` installs the process's signal handlers (:mod:`.process`) before anything
heavy is imported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .process import (
    Interrupted,
    ProcessSignals,
    leave_at_exit,
    leave_within,
    make_exit_honest,
    say,
)

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one clear line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ron-kernel")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        from ron_kernel import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of the whole command (run, config check, tail, status, ctl)."""
    from ron_kernel.config import add_config_arguments

    parser = _Parser(prog="ron-kernel", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ron-kernel {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run the kernel (demo services, or yours with --app)",
                         description="Run the kernel until Ctrl-C (SIGINT) or SIGTERM; "
                                     "SIGHUP reloads the config.")
    add_config_arguments(run)
    run.add_argument("--app", metavar="MODULE:FACTORY",
                     help="a factory (sync or async) that receives the Kernel and adds your "
                          "services (the module's APP_CONFIG, a pydantic model or dataclass, "
                          "is the config of its [app] keys); without it, demo services run")
    run.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                     help="event loop: uvloop when installed (auto), or force one")

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND",
                                       parser_class=_Parser)
    config_sub.required = True
    check = config_sub.add_parser(
        "check", help="print the effective config with the source of every value",
        description="Validate the effective config (defaults < file < env < flags) and print "
                    "every value with its source. Exit 0 when valid, 1 with every problem "
                    "listed when not.")
    add_config_arguments(check)
    check.add_argument("--app", metavar="MODULE:FACTORY",
                       help="also validate and explain the app keys (app.*) with the config "
                            "model the module declares (APP_CONFIG)")

    tail = sub.add_parser("tail", help="follow a running kernel's events (or a fleet's)",
                          description="Follow BASE_URL/events and print one JSON line per "
                                      "event; exit 0 after a Shutdown event. With --nats, "
                                      "follow every kernel of a fleet instead (one JSON line "
                                      "per event with its \"node\") until Ctrl-C, then "
                                      "exit 0.")
    _url_option(tail)
    tail.add_argument("--no-retry", action="store_true",
                      help="exit 1 when the connection is lost instead of retrying")
    tail.add_argument("--nats", metavar="NATS_URL",
                      help="follow the fleet on this NATS server (e.g. nats://127.0.0.1:4222; "
                           "needs the nats extra)")
    tail.add_argument("--node", metavar="GLOB", default=None,
                      help="with --nats: only nodes whose name matches (e.g. 'web-*')")
    tail.add_argument("--prefix", default="ron",
                      help="with --nats: the fleet's subject prefix (default: %(default)s)")

    tasks = sub.add_parser("tasks", help="list a running kernel's asyncio tasks",
                           description="Print GET BASE_URL/debug/tasks as a table (the kernel "
                                       "needs observability.debug_endpoints = true). Exit 0, "
                                       "1 when unreachable or refused, 2 for a bad URL.")
    _url_option(tasks)
    tasks.add_argument("--stacks", action="store_true",
                       help="print every frame of each task under its row")

    status = sub.add_parser(
        "status", help="print a running kernel's supervision tree as a table",
        description="Print BASE_URL/status as a table: each child's state, restarts, "
                    "readiness and last crash reason (rich when installed, else plain "
                    "columns). Exit 0, 1 when the kernel cannot be reached, 2 for a bad URL.")
    _url_option(status)
    status.add_argument("--watch", action="store_true",
                        help="refresh every second until Ctrl-C (then exit 0)")

    ctl = sub.add_parser(
        "ctl", help="release or restart a child, or reload the config, of a running kernel",
        description="Call POST BASE_URL/control/... with the Bearer token read from "
                    "$RONK_CONTROL_TOKEN (or --token-env). Exit 0 when done, 1 when refused "
                    "(the kernel's reason is printed) or unreachable, 2 for usage errors.")
    ctl_sub = ctl.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    ctl_sub.required = True
    for action, text in (("release", "take a quarantined child out of quarantine"),
                         ("restart", "stop a child and start it again now")):
        one = ctl_sub.add_parser(action, help=text, description=text + ".")
        one.add_argument("name", metavar="NAME",
                         help="the child's name (a nested child as parent/child)")
        _control_options(one)
    _control_options(ctl_sub.add_parser("reload", help="reload the config now",
                                        description="Reload the config now (as SIGHUP)."))
    return parser


def _url_option(parser: argparse.ArgumentParser) -> None:
    """``--url BASE_URL``: the running kernel a client command talks to."""
    parser.add_argument("--url", default="http://127.0.0.1:9909", metavar="BASE_URL",
                        help="the kernel's observability address (default: %(default)s)")


def _control_options(parser: argparse.ArgumentParser) -> None:
    _url_option(parser)
    parser.add_argument("--token-env", default="RONK_CONTROL_TOKEN", metavar="NAME",
                        help="the environment variable holding the token (default: "
                             "%(default)s); never pass the token itself on the command line")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status.

    Without ``argv`` this is the ``ron-kernel`` process itself: its signal handlers (SIGHUP
    deferred, SIGINT/SIGTERM an orderly stop, see :mod:`.process`) stay in place until the
    interpreter exits, and a stdout/stderr whose reader went away cannot change the exit
    status. With ``argv`` (called from Python) the previous handlers are back on return.
    """
    # First: from here on no signal meets its default action (the command, as far as a stop
    # signal during parsing needs it: `run` ends 0 after SIGTERM).
    signals = ProcessSignals(owns_process=argv is None, command=next(
        (a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), ""))
    signals.install()
    # Amnesia: nothing writes bytecode next to the code until the config says amnesia is off
    # (run and config check decide; the other commands load no code of yours).
    own_setting = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    status = EXIT_FAILURE  # what an unexpected exception ends with
    try:
        try:
            status = _dispatch(argv, signals, own_setting)
        finally:
            signals.finish()  # from here a stop signal changes nothing
    except Interrupted as stop:
        say(f"ron-kernel: stopped by {stop.sig.name}")
        status = stop.status
    except SystemExit as done:  # argparse: --help, --version, usage errors
        status = (done.code if isinstance(done.code, int)
                  else EXIT_OK if done.code is None else EXIT_FAILURE)
        raise
    finally:
        if argv is not None:
            signals.uninstall()
            sys.dont_write_bytecode = own_setting
        else:  # the process ends with `status`, whatever happens from here
            leave_at_exit()
            make_exit_honest()
            leave_within(status)
    return status


def _dispatch(argv: Sequence[str] | None, signals: ProcessSignals, own_setting: bool) -> int:
    args = build_parser().parse_args(argv)
    signals.command = args.command
    if args.command == "run":
        from .run import run_command

        return run_command(args, signals=signals, dont_write_bytecode=own_setting)
    if args.command == "config":
        from .run import config_check

        return config_check(args, dont_write_bytecode=own_setting)
    sys.dont_write_bytecode = own_setting  # the other commands load no code of yours
    if args.command == "tasks":
        from .tasks import tasks as print_tasks

        return print_tasks(args.url, out=sys.stdout, err=sys.stderr, stacks=args.stacks)
    if args.command == "status":
        from .status import status_command

        return status_command(args.url, watch=args.watch, out=sys.stdout, err=sys.stderr)
    if args.command == "ctl":
        from .ctl import ctl_command

        return ctl_command(args.action, getattr(args, "name", None), args.url,
                           token_env=args.token_env, out=sys.stdout, err=sys.stderr)
    # argparse allows only the choices above, so this is `tail`
    if args.nats is not None:
        return _tail_nats(args)
    if args.node is not None:
        say("ron-kernel tail: error: --node needs --nats (see --help)")
        return EXIT_USAGE
    from .tail import check_url, tail

    why = check_url(args.url)
    if why is not None:
        say(f"ron-kernel tail: error: --url {args.url!r} {why} (see --help)")
        return EXIT_USAGE
    return signals.run_loop(lambda: tail(args.url, retry=not args.no_retry))


def _tail_nats(args: argparse.Namespace) -> int:
    """``tail --nats``: 2 on a bad URL or prefix, 1 without the extra, 0 after Ctrl-C."""
    import asyncio

    from .._config import NATS_EXTRA_HINT, check_nats_url, check_subject_token, nats_installed
    from .._redact import redact_text

    why = check_nats_url(args.nats.strip())
    if why is not None:
        say(f"ron-kernel tail: error: --nats {redact_text(args.nats)!r} is not a NATS URL: "
            f"{why}; expected e.g. nats://127.0.0.1:4222")
        return EXIT_USAGE
    why = check_subject_token(args.prefix)
    if why is not None:
        say(f"ron-kernel tail: error: --prefix {args.prefix!r}: {why}")
        return EXIT_USAGE
    if not nats_installed():
        say(f"ron-kernel tail: error: --nats needs the nats extra ({NATS_EXTRA_HINT})")
        return EXIT_FAILURE
    from .tail import tail_nats

    try:
        return asyncio.run(tail_nats(args.nats.strip(), node=args.node or "*",
                                     prefix=args.prefix))
    except KeyboardInterrupt:  # a stop signal before its own handler was in place: still a
        return EXIT_OK         # clean stop (the process's handler raised Interrupted)
