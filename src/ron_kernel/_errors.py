"""The implementation behind :mod:`ron_kernel.errors` (the public facade documents it)."""

from __future__ import annotations

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


class KernelError(Exception):
    """Base class of every error raised by ron-kernel on purpose."""


class Lagged(KernelError):
    """A bus receiver fell more than ``capacity`` messages behind.

    ``missed`` is exactly how many messages it will never see. The receiver has already been
    moved to the oldest message still retained, so the next receive continues from there.
    """

    def __init__(self, missed: int) -> None:
        super().__init__(
            f"receiver lagged: {missed} message(s) were overwritten before it read them")
        self.missed = missed


class Closed(KernelError):
    """The bus, receiver or mailbox is closed and holds nothing more to read."""


class Empty(KernelError):
    """A non-waiting receive found nothing to read (the channel is still open)."""


class Busy(KernelError):
    """A bounded queue is full; the message was rejected at once (backpressure)."""


class Timeout(KernelError):
    """A deadline passed before the operation completed."""


class Canceled(KernelError):
    """The operation was abandoned because its owner is shutting down.

    Raised by ``ChildContext.wait(awaitable)`` when the supervised child is asked to drain: the
    awaitable is cancelled cleanly and ``Canceled`` is raised in its place (``ctx.sleep()``
    returns ``False`` instead).
    """


class ConfigError(KernelError, ValueError):
    """A configuration is invalid. It lists every problem found, not just the first.

    ``problems`` holds one human-readable line per problem; each names the key, where the bad
    value came from, the (redacted when secret) value and what was expected.
    """

    def __init__(self, problems: list[str] | str) -> None:
        items = [problems] if isinstance(problems, str) else list(problems)
        self.problems: list[str] = items
        if len(items) == 1:
            message = f"invalid configuration: {items[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in items)
            message = f"invalid configuration ({len(items)} problems):\n{lines}"
        super().__init__(message)
