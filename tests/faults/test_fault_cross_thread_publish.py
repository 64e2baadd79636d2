"""Fault class: the bus used from another thread.

Rule: ``publish`` belongs to the loop's thread. From another thread use
``bus.publish_threadsafe(msg)``; a plain ``publish`` from another thread that finds receivers
parked is detected, still wakes them through their loop at once, and warns (RuntimeWarning)
once. Tried: a parked ``recv`` and a publish from a worker thread (it used to wake ~10 s later).
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from ron_kernel import Bus
from ron_kernel import _bus as bus_module


async def test_publish_threadsafe_wakes_a_parked_receiver_at_once():
    bus: Bus[int] = Bus(8)
    rx = bus.subscribe()
    waiter = asyncio.ensure_future(rx.recv())
    await asyncio.sleep(0.01)
    threading.Thread(target=bus.publish_threadsafe, args=(7,)).start()
    assert await asyncio.wait_for(waiter, 1.0) == 7


async def test_a_plain_publish_from_another_thread_is_detected_and_still_wakes(monkeypatch):
    monkeypatch.setattr(bus_module, "_warned_wrong_thread", False)
    bus: Bus[int] = Bus(8)
    rx = bus.subscribe()
    waiter = asyncio.ensure_future(rx.recv())
    await asyncio.sleep(0.01)
    with pytest.warns(RuntimeWarning, match="publish_threadsafe"):
        thread = threading.Thread(target=bus.publish, args=(9,))
        thread.start()
        thread.join()
        assert await asyncio.wait_for(waiter, 1.0) == 9


def test_publish_threadsafe_before_any_loop_knows_the_bus_is_a_clear_error():
    bus: Bus[int] = Bus(8)
    with pytest.raises(RuntimeError, match="does not know which loop"):
        bus.publish_threadsafe(1)
