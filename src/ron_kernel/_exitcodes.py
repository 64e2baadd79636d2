"""The process exit statuses of ``ron-kernel``, defined once.

A leaf module (it imports nothing from the package), so the command line and the kernel can
both use it without an import cycle.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TERMINATED", "EXIT_USAGE",
           "EXIT_WORKER_START"]

EXIT_OK: Final = 0
"""Success: the kernel drained and stopped, the config is valid, ``tail`` saw ``Shutdown``; also
``run`` stopped in order by SIGTERM before the kernel was up (nothing had started to drain)."""

EXIT_FAILURE: Final = 1
"""A runtime failure: an invalid config, an address in use, a failing ``--app`` factory, a lost
``tail`` connection (with ``--no-retry``)."""

EXIT_USAGE: Final = 2
"""A usage error: an unknown command or flag, a missing value, a malformed ``--app`` (as
``argparse`` and the shell convention have it)."""

EXIT_WORKER_START: Final = 3
"""A worker process could not start its app: the import, the factory or the kernel's start
failed (it told its parent why first; the parent reports ``exit: status 3: <why>``)."""

EXIT_INTERRUPTED: Final = 130
"""Interrupted: 128 + SIGINT (2), the shell's status for Ctrl-C: ``run`` interrupted before the
kernel was up, any other command interrupted; also a second Ctrl-C/SIGTERM while stopping (the
process leaves at once)."""

EXIT_TERMINATED: Final = 143
"""Terminated: 128 + SIGTERM (15), for a command other than ``run`` that SIGTERM stopped before
it gave its answer (``config check``, ``tail``). ``run`` ends 0 after SIGTERM: stopping is its
job."""
