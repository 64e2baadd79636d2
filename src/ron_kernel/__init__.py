"""ron-kernel: a microkernel for long-lived asyncio services.

The frozen public surface is exactly the names in ``__all__``; everything else lives in
underscore-private modules, or in the documented extension modules (``ron_kernel.errors``,
``ron_kernel.bus``, ``ron_kernel.mailbox``, ...).
"""

from ._bus import Bus as Bus
from ._config import Config as Config
from ._events import KernelEvent as KernelEvent
from ._health import HealthState as HealthState
from ._metrics import Metrics as Metrics
from ._signals import wait_for_ctrl_c as wait_for_ctrl_c

__all__ = ["Bus", "Config", "HealthState", "KernelEvent", "Metrics", "wait_for_ctrl_c"]

from ._version import __version__ as __version__
