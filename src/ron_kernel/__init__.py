"""ron-kernel: a microkernel for long-lived asyncio services.

The frozen public surface is exactly the names in ``__all__``; everything else lives in
underscore-private modules, or in the documented extension modules (``ron_kernel.errors``,
``ron_kernel.bus``, ``ron_kernel.mailbox``, ...).

The six names are loaded on first use (PEP 562): ``import ron_kernel.cli`` must not pay for
asyncio, aiohttp and structlog, so that the ``ron-kernel`` command handles its signals from
the first moments of the process (a SIGHUP during start-up must not kill it).
"""

import importlib as _importlib
import typing as _typing

from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:  # pragma: no cover - the names load on first use
    from ._bus import Bus as Bus
    from ._config import Config as Config
    from ._events import KernelEvent as KernelEvent
    from ._health import HealthState as HealthState
    from ._metrics import Metrics as Metrics
    from ._signals import wait_for_ctrl_c as wait_for_ctrl_c

__all__ = ["Bus", "Config", "HealthState", "KernelEvent", "Metrics", "wait_for_ctrl_c"]

_HOME = {"Bus": "._bus", "Config": "._config", "HealthState": "._health",
         "KernelEvent": "._events", "Metrics": "._metrics", "wait_for_ctrl_c": "._signals"}
_PUBLIC_MODULES = ("bus", "config", "errors", "kernel", "logging", "mailbox", "supervisor",
                   "tracing")


def __getattr__(name: str) -> _typing.Any:
    """Load one of the six names (or a public module) on first use."""
    home = _HOME.get(name)
    if home is not None:
        value = getattr(_importlib.import_module(home, __name__), name)
        globals()[name] = value
        return value
    if name in _PUBLIC_MODULES:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_PUBLIC_MODULES))
