"""Bounded per-service mailboxes (the ryker mailboxes of the Rust kernel).

A :class:`Mailbox` is a bounded FIFO with many senders and one reader. When it is full,
:meth:`Mailbox.try_send` raises :class:`~ron_kernel.errors.Busy` at once (and counts
``busy_rejections_total{queue}``); nothing ever grows without bound. :meth:`Mailbox.request`
sends a message with a reply future and waits for the answer within a deadline::

    box: Mailbox[Request[str, int] | str] = Mailbox(name="index")
    # server task
    async def serve() -> None:
        while True:
            item = await box.recv()
            if isinstance(item, Request):
                item.reply(len(item.message))
    # client
    size = await box.request("hello", timeout=1.0)   # -> 5
"""

from ._mailbox import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from ._mailbox import Mailbox as Mailbox
from ._mailbox import Request as Request

__all__ = [
    "DEFAULT_CAPACITY",
    "Mailbox",
    "Request",
]
