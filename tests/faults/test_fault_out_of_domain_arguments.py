"""Fault class: arguments outside their domain.

Rule: a clear ``ValueError`` naming the argument, and no state changed. Tried: a float, a bool
or a string as ``recv_many``'s limit (it used to corrupt the receiver's cursor); NaN, infinite
and negative mailbox timeouts.
"""

from __future__ import annotations

import pytest

from ron_kernel import Bus
from ron_kernel.mailbox import Mailbox


@pytest.mark.parametrize("limit", [1.5, True, "2", 0, -3])
async def test_a_bad_batch_limit_is_refused_before_the_cursor_moves(limit):
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    for i in range(3):
        bus.publish(i)
    with pytest.raises(ValueError, match="limit"):
        rx.try_recv_many(limit)
    with pytest.raises(ValueError, match="limit"):
        await rx.recv_many(limit)
    assert rx.try_recv_many() == [0, 1, 2]


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -0.5])
async def test_mailbox_timeouts_must_be_finite(timeout):  # noqa: ASYNC109
    box: Mailbox[object] = Mailbox(1, name="box")
    with pytest.raises(ValueError, match="timeout"):
        await box.send(1, timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        await box.request(1, timeout=timeout)
    assert len(box) == 0
