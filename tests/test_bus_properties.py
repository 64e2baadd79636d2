"""Property tests of the bus and the mailbox, over arbitrary interleavings of operations."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ron_kernel import Bus
from ron_kernel.bus import Receiver
from ron_kernel.errors import Busy, Closed, Empty, Lagged
from ron_kernel.mailbox import Mailbox

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dev dependency on Linux
    uvloop = None


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Both loop flavors, as in conftest (sync hypothesis tests drive their own loop)."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


MAX_RECEIVERS = 4

# One operation: publish, a receive of some kind by receiver i, subscribe, close receiver i.
_op = st.one_of(
    st.tuples(st.just("publish"), st.integers(1, 6)),  # publish a burst of n
    st.tuples(st.just("recv"), st.integers(0, MAX_RECEIVERS - 1)),
    st.tuples(st.just("recv_many"), st.integers(0, MAX_RECEIVERS - 1),
              st.one_of(st.none(), st.integers(1, 5))),
    st.tuples(st.just("subscribe")),
    st.tuples(st.just("close"), st.integers(0, MAX_RECEIVERS - 1)),
)


@dataclass
class _Tracked:
    rx: Receiver[int]
    first: int  # the id of the first message published after it subscribed
    received: list[int] = field(default_factory=list)
    missed: int = 0
    last: int | None = None  # id of the last message published while it was open


def _receive(t: _Tracked, how: str, limit: int | None) -> None:
    try:
        if how == "recv":
            t.received.append(t.rx.try_recv())
        else:
            t.received.extend(t.rx.try_recv_many(limit))
    except Lagged as lag:
        assert lag.missed > 0
        t.missed += lag.missed
    except (Empty, Closed):
        pass


def _check(t: _Tracked) -> None:
    got = t.received
    # publish order, no duplicates
    assert got == sorted(set(got))
    # only messages published while it was subscribed
    if got:
        assert got[0] >= t.first
        assert t.last is not None and got[-1] <= t.last
    # reported lag equals exactly what it missed
    seen_window = 0 if t.last is None else t.last - t.first + 1
    assert t.missed == seen_window - len(got)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 5), ops=st.lists(_op, max_size=80))
def test_each_receiver_sees_publish_order_without_duplicates_and_lag_equals_what_it_missed(
    capacity: int, ops: list[tuple[Any, ...]]
) -> None:
    bus: Bus[int] = Bus(capacity)
    tracked = [_Tracked(bus.subscribe(), 0)]
    next_id = 0
    for op in ops:
        kind = op[0]
        if kind == "publish":
            for _ in range(op[1]):
                open_now = [t for t in tracked if not t.rx.closed]
                assert bus.publish(next_id) == len(open_now)
                for t in open_now:
                    t.last = next_id
                next_id += 1
        elif kind == "subscribe":
            if len(tracked) < MAX_RECEIVERS:
                tracked.append(_Tracked(bus.subscribe(), next_id))
        elif kind == "close":
            if op[1] < len(tracked):
                tracked[op[1]].rx.close()
        elif op[1] < len(tracked):
            t = tracked[op[1]]
            if t.rx.closed:
                # a closed receiver reads nothing more: what it had not read is not "missed"
                with pytest.raises(Closed):
                    t.rx.try_recv()
            else:
                _receive(t, kind, op[2] if kind == "recv_many" else None)
        assert bus.receiver_count == sum(not t.rx.closed for t in tracked)
    for t in tracked:
        if t.rx.closed:
            continue
        # drain: after the final read every message published to it is received or missed
        for _ in range(capacity + 2):
            _receive(t, "recv_many", None)
        assert len(t.rx) == 0
        _check(t)
    assert bus.stats().lagged == sum(t.missed for t in tracked)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 8),
    receivers=st.integers(1, 4),
    bursts=st.lists(st.integers(1, 12), min_size=1, max_size=15),
    batch=st.booleans(),
    flavor=st.sampled_from(sorted(_loop_factories())),
)
def test_waiting_receivers_see_publish_order_and_exact_lag_under_any_burst_pattern(
    capacity: int, receivers: int, bursts: list[int], batch: bool, flavor: str
) -> None:
    async def scenario() -> None:
        bus: Bus[int] = Bus(capacity)
        rxs = [bus.subscribe() for _ in range(receivers)]

        async def reader(rx: Receiver[int]) -> tuple[list[int], int]:
            got: list[int] = []
            missed = 0
            while True:
                try:
                    if batch:
                        got.extend(await rx.recv_many())
                    else:
                        got.append(await rx.recv())
                except Lagged as lag:
                    missed += lag.missed
                except Closed:
                    return got, missed

        tasks = [asyncio.create_task(reader(rx)) for rx in rxs]
        next_id = 0
        for n in bursts:
            for _ in range(n):
                bus.publish(next_id)
                next_id += 1
            await asyncio.sleep(0)
        bus.close()
        for got, missed in await asyncio.gather(*tasks):
            assert got == sorted(set(got))
            assert missed == next_id - len(got)
            if next_id:
                assert got[-1] == next_id - 1  # the newest is never lost

    loop = _loop_factories()[flavor]()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_publish_is_a_plain_function_not_a_coroutine() -> None:
    for fn in (Bus.publish, Bus.close, Bus.subscribe):
        assert not inspect.iscoroutinefunction(fn)
        assert not inspect.isasyncgenfunction(fn)
        assert not inspect.isgeneratorfunction(fn)


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 16),
    idle=st.integers(0, 4),
    parked=st.integers(0, 4),
    messages=st.integers(1, 200),
    flavor=st.sampled_from(sorted(_loop_factories())),
)
def test_publish_never_blocks_with_a_stalled_receiver(
    capacity: int, idle: int, parked: int, messages: int, flavor: str
) -> None:
    """Publish completes with no event loop running, whatever the receivers are doing.

    Idle receivers never read; parked receivers are suspended inside ``recv`` on a loop that is
    stopped, so nobody can make progress. If publish awaited or waited for room, these calls
    could not return at all.
    """
    loop = _loop_factories()[flavor]()
    try:
        bus: Bus[int] = Bus(capacity)
        idle_rxs = [bus.subscribe() for _ in range(idle)]
        parked_rxs = [bus.subscribe() for _ in range(parked)]
        tasks = [loop.create_task(rx.recv()) for rx in parked_rxs]
        loop.run_until_complete(asyncio.sleep(0))  # every parked task is now waiting
        assert not any(t.done() for t in tasks)
        assert not loop.is_running()

        for i in range(messages):
            result = bus.publish(i)
            assert type(result) is int  # a count, not an awaitable
            assert result == idle + parked

        # the stalled receivers lost only what overflowed, and learn it exactly
        for rx in idle_rxs:
            overflow = max(0, messages - capacity)
            if overflow:
                with pytest.raises(Lagged) as lag:
                    rx.try_recv()
                assert lag.value.missed == overflow
            assert rx.try_recv_many() == list(range(max(0, messages - capacity), messages))
        # the parked ones were woken by the first publish; they run only now, so they too see
        # exactly the overflow first, else message 0
        if tasks:
            outcomes = loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            for outcome in outcomes:
                if messages > capacity:
                    assert isinstance(outcome, Lagged)
                    assert outcome.missed == messages - capacity
                else:
                    assert outcome == 0
    finally:
        loop.close()


_mailbox_op = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 10_000)),
    st.tuples(st.just("recv")),
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 6), ops=st.lists(_mailbox_op, max_size=100))
def test_mailbox_depth_never_exceeds_capacity(
    capacity: int, ops: list[tuple[Any, ...]]
) -> None:
    box: Mailbox[int] = Mailbox(capacity, name="prop")
    model: list[int] = []
    for op in ops:
        if op[0] == "send":
            if len(model) == capacity:
                with pytest.raises(Busy):
                    box.try_send(op[1])
            else:
                box.try_send(op[1])
                model.append(op[1])
        elif model:
            assert box.try_recv() == model.pop(0)  # FIFO
        else:
            with pytest.raises(Empty):
                box.try_recv()
        assert len(box) == len(model) <= capacity


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 4),
    senders=st.integers(1, 5),
    per_sender=st.integers(1, 10),
    flavor=st.sampled_from(sorted(_loop_factories())),
)
def test_mailbox_depth_never_exceeds_capacity_with_waiting_senders(
    capacity: int, senders: int, per_sender: int, flavor: str
) -> None:
    async def scenario() -> None:
        box: Mailbox[tuple[int, int]] = Mailbox(capacity, name="prop")
        peak = 0

        def watch() -> None:
            nonlocal peak
            peak = max(peak, len(box))

        async def sender(s: int) -> None:
            for i in range(per_sender):
                await box.send((s, i))
                watch()

        tasks = [asyncio.create_task(sender(s)) for s in range(senders)]
        got: list[tuple[int, int]] = []
        for _ in range(senders * per_sender):
            watch()
            got.append(await box.recv())
        await asyncio.gather(*tasks)
        assert peak <= capacity
        assert len(got) == senders * per_sender
        for s in range(senders):  # per-sender FIFO
            assert [i for (who, i) in got if who == s] == list(range(per_sender))

    _run(flavor, scenario)


def _run(flavor: str, scenario: Callable[[], Any]) -> None:
    loop = _loop_factories()[flavor]()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
