"""Bus and Receiver: tokio broadcast semantics, the batch path, lifecycle, cancel-safety."""

from __future__ import annotations

import asyncio
import gc
import re

import pytest

from ron_kernel import Bus, Metrics
from ron_kernel._bus import MAX_CAPACITY
from ron_kernel.bus import BusStats, Receiver
from ron_kernel.errors import Closed, Empty, Lagged


def _drain(rx: Receiver[int]) -> list[int]:
    out: list[int] = []
    while True:
        try:
            out.append(rx.try_recv())
        except Empty:
            return out


def _metric(metrics: Metrics, name: str) -> float:
    text = metrics.render().decode()
    found = re.search(rf"^{name}\{{amnesia=\"off\"\}} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not rendered"
    return float(found.group(1))


async def _until_parked(*tasks: asyncio.Task[object]) -> None:
    """Let ``tasks`` run until each is suspended (parked on the bus)."""
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(not t.done() for t in tasks)


# ------------------------------------------------------------------ construction


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, False, "8", None, MAX_CAPACITY + 1, 1 << 40])
def test_capacity_must_be_a_positive_bounded_int(bad: object) -> None:
    with pytest.raises(ValueError, match="Bus capacity must be"):
        Bus(bad)  # type: ignore[arg-type]


def test_capacity_error_message_quotes_the_value() -> None:
    with pytest.raises(ValueError, match=r"got 1\.5"):
        Bus(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="got 0"):
        Bus(0)


def test_default_capacity_and_properties() -> None:
    bus: Bus[int] = Bus()
    assert bus.capacity == 4096
    assert bus.receiver_count == 0
    assert not bus.closed
    assert Bus(MAX_CAPACITY).capacity == MAX_CAPACITY
    assert "capacity=4096" in repr(bus)


# ------------------------------------------------------------------ tokio's classic cases


def test_publish_returns_the_receiver_count_at_send_time() -> None:
    bus: Bus[int] = Bus(4)
    assert bus.publish(0) == 0
    rx1 = bus.subscribe()
    assert bus.publish(1) == 1
    rx2 = bus.subscribe()
    assert bus.publish(2) == 2
    assert _drain(rx1) == [1, 2]
    assert _drain(rx2) == [2]


def test_two_receivers_each_see_every_message_in_order() -> None:
    bus: Bus[int] = Bus(16)
    a, b = bus.subscribe(), bus.subscribe()
    for i in range(10):
        bus.publish(i)
    assert _drain(a) == list(range(10))
    assert _drain(b) == list(range(10))


def test_every_receiver_gets_the_same_object() -> None:
    bus: Bus[dict[str, int]] = Bus(4)
    a, b = bus.subscribe(), bus.subscribe()
    msg = {"x": 1}
    bus.publish(msg)
    assert a.try_recv() is msg
    assert b.try_recv() is msg


def test_slow_receiver_lags_while_the_fast_one_sees_everything() -> None:
    bus: Bus[int] = Bus(4)
    fast, slow = bus.subscribe(), bus.subscribe()
    seen: list[int] = []
    for i in range(20):
        bus.publish(i)
        seen.append(fast.try_recv())
    assert seen == list(range(20))
    with pytest.raises(Lagged) as lag:
        slow.try_recv()
    assert lag.value.missed == 16
    assert _drain(slow) == [16, 17, 18, 19]


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_lag_is_reported_by_exactly_the_number_missed(n: int) -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    for i in range(4 + n):
        bus.publish(i)
    with pytest.raises(Lagged) as lag:
        rx.try_recv()
    assert lag.value.missed == n
    assert str(n) in str(lag.value)
    # continues from the oldest retained message, and only one Lagged is raised
    assert _drain(rx) == list(range(n, n + 4))
    assert bus.stats().lagged == n


def test_no_lag_at_exactly_capacity() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    for i in range(4):
        bus.publish(i)
    assert _drain(rx) == [0, 1, 2, 3]
    assert bus.stats().lagged == 0


def test_capacity_one_keeps_only_the_latest() -> None:
    bus: Bus[str] = Bus(1)
    rx = bus.subscribe()
    bus.publish("a")
    assert rx.try_recv() == "a"
    bus.publish("b")
    bus.publish("c")
    with pytest.raises(Lagged) as lag:
        rx.try_recv()
    assert lag.value.missed == 1
    assert rx.try_recv() == "c"
    with pytest.raises(Empty):
        rx.try_recv()


def test_close_while_values_remain_drains_then_raises_closed() -> None:
    bus: Bus[int] = Bus(8)
    rx = bus.subscribe()
    for i in range(3):
        bus.publish(i)
    bus.close()
    assert [rx.try_recv() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(Closed):
        rx.try_recv()
    with pytest.raises(Closed):
        rx.try_recv_many()


async def test_close_while_values_remain_drains_via_recv_then_closed() -> None:
    bus: Bus[int] = Bus(8)
    rx, rx2 = bus.subscribe(), bus.subscribe()
    for i in range(3):
        bus.publish(i)
    bus.close()
    assert [await rx.recv() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(Closed):
        await rx.recv()
    assert await rx2.recv_many() == [0, 1, 2]
    with pytest.raises(Closed):
        await rx2.recv_many()


def test_resubscribe_starts_at_the_tail() -> None:
    bus: Bus[int] = Bus(8)
    rx = bus.subscribe()
    bus.publish(1)
    bus.publish(2)
    rx2 = rx.resubscribe()
    assert bus.receiver_count == 2
    assert len(rx2) == 0
    with pytest.raises(Empty):
        rx2.try_recv()
    bus.publish(3)
    assert _drain(rx) == [1, 2, 3]
    assert _drain(rx2) == [3]


def test_subscribe_after_publish_does_not_see_older_messages() -> None:
    bus: Bus[int] = Bus(8)
    early = bus.subscribe()
    bus.publish(1)
    late = bus.subscribe()
    bus.publish(2)
    assert _drain(early) == [1, 2]
    assert _drain(late) == [2]


def test_try_recv_on_an_empty_receiver_raises_empty() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    with pytest.raises(Empty, match="no message"):
        rx.try_recv()
    assert rx.try_recv_many() == []


# ------------------------------------------------------------------ no receivers / closed bus


def test_publish_with_no_receivers_returns_zero_and_keeps_nothing() -> None:
    metrics = Metrics()
    bus: Bus[int] = Bus(4, metrics=metrics)
    assert bus.publish(1) == 0
    assert bus.publish(2) == 0
    rx = bus.subscribe()
    assert len(rx) == 0
    with pytest.raises(Empty):
        rx.try_recv()
    stats = bus.stats()
    assert (stats.published, stats.no_receivers, stats.retained) == (2, 2, 0)
    assert _metric(metrics, "bus_published_total") == 2
    assert _metric(metrics, "bus_no_receivers_total") == 2


def test_publish_after_close_returns_zero_and_counts_dropped() -> None:
    metrics = Metrics()
    bus: Bus[int] = Bus(4, metrics=metrics)
    rx = bus.subscribe()
    bus.publish(1)
    bus.close()
    bus.close()  # idempotent
    assert bus.closed
    assert bus.publish(2) == 0
    assert bus.publish(3) == 0
    assert _drain_until_closed(rx) == [1]
    stats = bus.stats()
    assert (stats.published, stats.dropped, stats.closed) == (3, 2, True)
    assert _metric(metrics, "bus_dropped_total") == 2
    assert _metric(metrics, "bus_published_total") == 3


def _drain_until_closed(rx: Receiver[int]) -> list[int]:
    out: list[int] = []
    while True:
        try:
            out.append(rx.try_recv())
        except Closed:
            return out


def test_stats_reports_every_counter() -> None:
    bus: Bus[int] = Bus(2)
    rx = bus.subscribe()
    for i in range(5):
        bus.publish(i)
    with pytest.raises(Lagged):
        rx.try_recv()
    stats = bus.stats()
    assert isinstance(stats, BusStats)
    assert stats.as_dict() == {
        "capacity": 2, "closed": False, "dropped": 0, "lagged": 3, "no_receivers": 0,
        "published": 5, "receivers": 1, "retained": 2}
    assert "lagged=3" in repr(stats)


# ------------------------------------------------------------------ batch path


def test_try_recv_many_returns_everything_available() -> None:
    bus: Bus[int] = Bus(8)
    rx = bus.subscribe()
    for i in range(5):
        bus.publish(i)
    assert rx.try_recv_many() == [0, 1, 2, 3, 4]
    assert rx.try_recv_many() == []


def test_try_recv_many_honours_the_limit() -> None:
    bus: Bus[int] = Bus(8)
    rx = bus.subscribe()
    for i in range(5):
        bus.publish(i)
    assert rx.try_recv_many(2) == [0, 1]
    assert rx.try_recv_many(limit=2) == [2, 3]
    assert rx.try_recv_many(10) == [4]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_recv_many_limit_must_be_a_positive_int(bad: object) -> None:
    bus: Bus[int] = Bus(8)
    rx = bus.subscribe()
    bus.publish(1)
    bus.publish(2)
    with pytest.raises(ValueError, match="limit must be an int > 0"):
        rx.try_recv_many(bad)  # type: ignore[arg-type]
    assert rx.try_recv_many() == [1, 2]  # the failed call consumed nothing, cursor intact
    with pytest.raises(ValueError, match="limit must be an int > 0"):
        rx.try_recv_many(bad)  # type: ignore[arg-type]  # also when nothing is there


def test_recv_many_wraps_around_the_ring_in_order() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    for i in range(3):
        bus.publish(i)
    assert rx.try_recv_many() == [0, 1, 2]
    for i in range(3, 7):  # slots 3, 0, 1, 2
        bus.publish(i)
    assert rx.try_recv_many() == [3, 4, 5, 6]
    for i in range(7, 10):
        bus.publish(i)
    assert rx.try_recv_many(2) == [7, 8]
    assert rx.try_recv_many() == [9]


def test_recv_many_raises_lagged_before_the_batch() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    for i in range(7):
        bus.publish(i)
    with pytest.raises(Lagged) as lag:
        rx.try_recv_many()
    assert lag.value.missed == 3
    assert rx.try_recv_many() == [3, 4, 5, 6]


async def test_await_recv_many_raises_lagged_then_returns_the_retained_batch() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    for i in range(10):
        bus.publish(i)
    with pytest.raises(Lagged) as lag:
        await rx.recv_many(limit=3)
    assert lag.value.missed == 6
    assert await rx.recv_many(limit=3) == [6, 7, 8]
    assert await rx.recv_many() == [9]


async def test_recv_many_waits_for_at_least_one_message() -> None:
    bus: Bus[int] = Bus(8)
    rx = bus.subscribe()
    task = asyncio.create_task(rx.recv_many())
    await _until_parked(task)
    bus.publish(1)
    bus.publish(2)
    assert await task == [1, 2]


# ------------------------------------------------------------------ len / lifecycle


def test_len_counts_unread_messages_including_lagged_ones() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    assert len(rx) == 0
    for i in range(3):
        bus.publish(i)
    assert len(rx) == 3
    rx.try_recv()
    assert len(rx) == 2
    for i in range(5):
        bus.publish(i)
    assert len(rx) == 7  # like tokio: more than is retained once it lagged
    with pytest.raises(Lagged):
        rx.try_recv()
    assert len(rx) == 4
    rx.close()
    assert len(rx) == 0
    assert "closed=True" in repr(rx)


def test_closing_a_receiver_drops_the_count_once_and_stops_reads() -> None:
    bus: Bus[int] = Bus(4)
    rx, other = bus.subscribe(), bus.subscribe()
    bus.publish(1)
    assert bus.receiver_count == 2
    rx.close()
    rx.close()
    assert rx.closed
    assert bus.receiver_count == 1
    with pytest.raises(Closed):
        rx.try_recv()  # even though a message is still there
    with pytest.raises(Closed):
        rx.try_recv_many()
    assert bus.publish(2) == 1
    assert _drain(other) == [1, 2]


def test_context_manager_closes_the_receiver() -> None:
    bus: Bus[int] = Bus(4)
    with bus.subscribe() as rx:
        assert bus.receiver_count == 1
        assert not rx.closed
    assert rx.closed
    assert bus.receiver_count == 0


def test_a_garbage_collected_receiver_stops_counting() -> None:
    bus: Bus[int] = Bus(4)
    keep = bus.subscribe()
    rx = bus.subscribe()
    assert bus.receiver_count == 2
    del rx
    gc.collect()
    assert bus.receiver_count == 1
    assert bus.publish(1) == 1
    keep.close()
    del keep
    gc.collect()
    assert bus.receiver_count == 0


def test_a_closed_receiver_garbage_collected_is_not_subtracted_twice() -> None:
    bus: Bus[int] = Bus(4)
    keep = bus.subscribe()
    rx = bus.subscribe()
    rx.close()
    del rx
    gc.collect()
    assert bus.receiver_count == 1
    keep.close()


# ------------------------------------------------------------------ waiting reads


async def test_recv_waits_for_the_next_publish() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    task = asyncio.create_task(rx.recv())
    await _until_parked(task)
    assert bus.publish(42) == 1
    assert await task == 42


async def test_one_publish_wakes_every_parked_receiver() -> None:
    bus: Bus[str] = Bus(4)
    rxs = [bus.subscribe() for _ in range(5)]
    tasks = [asyncio.create_task(rx.recv()) for rx in rxs]
    await _until_parked(*tasks)
    bus.publish("go")
    assert await asyncio.gather(*tasks) == ["go"] * 5


async def test_recv_raises_lagged_then_continues() -> None:
    bus: Bus[int] = Bus(2)
    rx = bus.subscribe()
    for i in range(5):
        bus.publish(i)
    with pytest.raises(Lagged) as lag:
        await rx.recv()
    assert lag.value.missed == 3
    assert [await rx.recv(), await rx.recv()] == [3, 4]


async def test_close_wakes_parked_receivers_with_closed() -> None:
    bus: Bus[int] = Bus(4)
    a, b = bus.subscribe(), bus.subscribe()
    ta = asyncio.create_task(a.recv())
    tb = asyncio.create_task(b.recv_many())
    await _until_parked(ta, tb)
    bus.close()
    with pytest.raises(Closed):
        await ta
    with pytest.raises(Closed):
        await tb


async def test_closing_a_receiver_wakes_its_parked_recv_with_closed() -> None:
    bus: Bus[int] = Bus(4)
    rx, other = bus.subscribe(), bus.subscribe()
    task = asyncio.create_task(rx.recv())
    bystander = asyncio.create_task(other.recv())
    await _until_parked(task, bystander)
    rx.close()
    with pytest.raises(Closed):
        await asyncio.wait_for(task, 1.0)
    # the bystander was woken spuriously at most; it keeps waiting and gets the next message
    await _until_parked(bystander)
    bus.publish(7)
    assert await bystander == 7


async def test_recv_on_a_closed_receiver_raises_closed_at_once() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    rx.close()
    with pytest.raises(Closed):
        await rx.recv()
    with pytest.raises(Closed):
        await rx.recv_many()


# ------------------------------------------------------------------ cancel-safety


async def test_cancelled_recv_consumes_nothing() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    task = asyncio.create_task(rx.recv())
    await _until_parked(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    bus.publish(1)
    assert rx.try_recv() == 1


async def test_cancelling_one_waiter_does_not_disturb_the_others_sharing_the_wakeup() -> None:
    bus: Bus[int] = Bus(4)
    rxs = [bus.subscribe() for _ in range(4)]
    recv_tasks = [asyncio.create_task(rx.recv()) for rx in rxs[:2]]
    many_tasks = [asyncio.create_task(rx.recv_many()) for rx in rxs[2:]]
    victim_rx = bus.subscribe()
    victim = asyncio.create_task(victim_rx.recv())
    await _until_parked(*recv_tasks, *many_tasks, victim)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    # the shared future was cancelled under the others: they must still be waiting
    await _until_parked(*recv_tasks, *many_tasks)
    assert bus.publish(5) == 5
    assert await asyncio.gather(*recv_tasks) == [5, 5]
    assert await asyncio.gather(*many_tasks) == [[5], [5]]
    assert victim_rx.try_recv() == 5


async def test_a_timed_out_recv_does_not_disturb_other_waiters() -> None:
    bus: Bus[int] = Bus(4)
    a, b = bus.subscribe(), bus.subscribe()
    waiting = asyncio.create_task(b.recv())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await a.recv()
    await _until_parked(waiting)
    bus.publish(9)
    assert await waiting == 9
    assert a.try_recv() == 9


async def test_a_waiter_that_once_swallowed_a_cancel_is_not_hit_by_someone_elses_cancel() -> None:
    bus: Bus[int] = Bus(4)
    rx, victim_rx = bus.subscribe(), bus.subscribe()

    async def sloppy() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # swallowed without uncancel(): cancelling() stays at 1
        return await rx.recv()

    task = asyncio.create_task(sloppy())
    await _until_parked(task)
    task.cancel()
    await _until_parked(task)  # now parked in recv
    victim = asyncio.create_task(victim_rx.recv())
    await _until_parked(victim)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    await _until_parked(task)
    bus.publish(3)
    assert await task == 3


async def test_cancel_after_the_wakeup_still_cancels_and_consumes_nothing() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()
    task = asyncio.create_task(rx.recv())
    await _until_parked(task)
    bus.publish(1)  # resolves the wake-up future...
    task.cancel()  # ...but the cancel lands before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rx.try_recv() == 1


# ------------------------------------------------------------------ handle_recv and async for


def test_handle_recv_passes_messages_and_counts_lag() -> None:
    metrics = Metrics()
    assert Bus.handle_recv("msg", metrics) == "msg"
    assert Bus.handle_recv(0, metrics) == 0
    assert Bus.handle_recv(Lagged(4), metrics) is None
    assert Bus.handle_recv(Lagged(3), metrics) is None
    assert Bus.handle_recv(Closed("done"), metrics) is None
    assert Bus.handle_recv(Lagged(5), None) is None
    assert _metric(metrics, "bus_receiver_lag_total") == 7


async def test_handle_recv_with_a_real_receive_outcome() -> None:
    metrics = Metrics()
    bus: Bus[int] = Bus(2, metrics=metrics)
    rx = bus.subscribe()
    for i in range(4):
        bus.publish(i)
    got: list[int | None] = []
    for _ in range(3):
        outcome: int | Lagged | Closed
        try:
            outcome = await rx.recv()
        except (Lagged, Closed) as exc:
            outcome = exc
        got.append(Bus.handle_recv(outcome, metrics))
    assert got == [None, 2, 3]
    assert _metric(metrics, "bus_receiver_lag_total") == 2
    assert _metric(metrics, "bus_lagged_total") == 2


async def test_async_for_skips_lag_counts_it_and_ends_at_closed() -> None:
    metrics = Metrics()
    bus: Bus[int] = Bus(4, metrics=metrics)
    rx = bus.subscribe()
    for i in range(10):
        bus.publish(i)
    bus.close()
    assert [msg async for msg in rx] == [6, 7, 8, 9]
    assert _metric(metrics, "bus_receiver_lag_total") == 6
    assert _metric(metrics, "bus_lagged_total") == 6


async def test_async_for_without_metrics_still_skips_lag() -> None:
    bus: Bus[int] = Bus(2)
    rx = bus.subscribe()
    for i in range(5):
        bus.publish(i)
    bus.close()
    assert [msg async for msg in rx] == [3, 4]


async def test_async_for_delivers_live_messages_until_close() -> None:
    bus: Bus[int] = Bus(4)
    rx = bus.subscribe()

    async def consume() -> list[int]:
        return [msg async for msg in rx]

    task = asyncio.create_task(consume())
    for i in range(10):
        await _until_parked(task)
        bus.publish(i)
    await _until_parked(task)
    bus.close()
    assert await task == list(range(10))
