"""The exceptions ron-kernel raises.

Every error the kernel raises on purpose derives from :class:`KernelError`, so a caller can
catch the whole family at once, or one kind precisely::

    from ron_kernel.errors import Lagged, Closed

    try:
        msg = await rx.recv()
    except Lagged as lag:
        log.warning("missed %d events", lag.missed)
    except Closed:
        return
"""

from ._errors import Busy as Busy
from ._errors import Canceled as Canceled
from ._errors import Closed as Closed
from ._errors import ConfigError as ConfigError
from ._errors import Empty as Empty
from ._errors import KernelError as KernelError
from ._errors import Lagged as Lagged
from ._errors import Timeout as Timeout

__all__ = [
    "Busy",
    "Canceled",
    "Closed",
    "ConfigError",
    "Empty",
    "KernelError",
    "Lagged",
    "Timeout",
]
