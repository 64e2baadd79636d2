"""The bus's receiving side and statistics (``Bus`` itself is exported from ``ron_kernel``).

See :class:`ron_kernel.Bus` for the semantics: a bounded broadcast with one shared ring and a
cursor per :class:`Receiver`; a receiver that falls behind gets
:class:`~ron_kernel.errors.Lagged` once and continues from the oldest retained message.
"""

from ._bus import BusStats as BusStats
from ._bus import Receiver as Receiver

__all__ = ["BusStats", "Receiver"]
