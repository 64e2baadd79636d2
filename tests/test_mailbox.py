"""Mailbox: bounded FIFO, Busy at once, send with timeout, request/reply, close semantics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ron_kernel import Metrics
from ron_kernel.errors import Busy, Closed, Empty, Timeout
from ron_kernel.mailbox import DEFAULT_CAPACITY, Mailbox, Request


def _series(metrics: Metrics, family: str, **labels: str) -> float:
    wanted = {**labels, "amnesia": "off"}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for sample in fam.samples:
            if sample.name == family and sample.labels == wanted:
                return float(sample.value)
    raise AssertionError(f"{family}{wanted} not in render()")


async def _until_blocked(*tasks: asyncio.Task[object]) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(not t.done() for t in tasks)


def test_default_capacity_is_128() -> None:
    box: Mailbox[int] = Mailbox(name="a")
    assert box.capacity == DEFAULT_CAPACITY == 128
    assert len(box) == 0
    assert not box.closed
    assert "name='a'" in repr(box)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "4"])
def test_capacity_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="Mailbox capacity must be an int > 0"):
        Mailbox(bad, name="a")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", None, 3])
def test_name_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(ValueError, match="Mailbox name must be a non-empty string"):
        Mailbox(4, name=bad)  # type: ignore[arg-type]


def test_try_send_is_fifo_and_raises_busy_at_once_when_full() -> None:
    metrics = Metrics()
    box: Mailbox[int] = Mailbox(2, name="idx", metrics=metrics)
    box.try_send(1)
    box.try_send(2)
    with pytest.raises(Busy, match="'idx' is full"):
        box.try_send(3)
    with pytest.raises(Busy):
        box.try_send(4)
    assert len(box) == 2
    assert _series(metrics, "busy_rejections_total", queue="idx") == 2
    assert box.try_recv() == 1
    box.try_send(5)
    assert [box.try_recv(), box.try_recv()] == [2, 5]
    with pytest.raises(Empty, match="'idx' is empty"):
        box.try_recv()


def test_queue_depth_gauge_is_rendered_per_queue() -> None:
    metrics = Metrics()
    a: Mailbox[int] = Mailbox(4, name="alpha", metrics=metrics)
    b: Mailbox[int] = Mailbox(4, name="beta", metrics=metrics)
    for i in range(3):
        a.try_send(i)
    b.try_send(0)
    assert _series(metrics, "queue_depth", queue="alpha") == 3
    assert _series(metrics, "queue_depth", queue="beta") == 1
    a.try_recv()
    assert _series(metrics, "queue_depth", queue="alpha") == 2


def test_a_mailbox_without_metrics_counts_nothing_but_still_rejects() -> None:
    box: Mailbox[int] = Mailbox(1, name="quiet")
    box.try_send(1)
    with pytest.raises(Busy):
        box.try_send(2)
    box.close()
    with pytest.raises(Closed):
        box.try_send(3)


async def test_send_waits_for_room_then_enqueues() -> None:
    box: Mailbox[int] = Mailbox(1, name="a")
    box.try_send(1)
    task = asyncio.create_task(box.send(2))
    await _until_blocked(task)
    assert len(box) == 1
    assert await box.recv() == 1
    await asyncio.wait_for(task, 1.0)
    assert await box.recv() == 2


async def test_send_with_timeout_raises_timeout_and_counts_it() -> None:
    metrics = Metrics()
    box: Mailbox[int] = Mailbox(1, name="a", metrics=metrics)
    box.try_send(1)
    with pytest.raises(Timeout, match="'a' stayed full"):
        await box.send(2, timeout=0.01)
    with pytest.raises(Timeout):
        await box.send(2, timeout=0)
    assert len(box) == 1
    assert box.try_recv() == 1
    assert metrics.counters.io_timeouts_total.get("mailbox_send") == 2


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), float("-inf"), True, "1"])
async def test_send_rejects_a_timeout_that_is_not_finite_and_non_negative(bad: object) -> None:
    box: Mailbox[int] = Mailbox(1, name="a")
    with pytest.raises(ValueError, match="send timeout must be"):
        await box.send(1, timeout=bad)  # type: ignore[arg-type]
    assert len(box) == 0


async def test_a_cancelled_send_enqueues_nothing_and_passes_its_turn_on() -> None:
    box: Mailbox[int] = Mailbox(1, name="a")
    box.try_send(0)
    cancelled = asyncio.create_task(box.send(1))
    waiting = asyncio.create_task(box.send(2))
    await _until_blocked(cancelled, waiting)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert box.try_recv() == 0
    await asyncio.wait_for(waiting, 1.0)
    assert box.try_recv() == 2
    assert len(box) == 0


async def test_recv_waits_for_a_message() -> None:
    box: Mailbox[str] = Mailbox(4, name="a")
    task = asyncio.create_task(box.recv())
    await _until_blocked(task)
    box.try_send("hi")
    assert await task == "hi"


async def test_a_cancelled_recv_consumes_nothing() -> None:
    box: Mailbox[str] = Mailbox(4, name="a")
    task = asyncio.create_task(box.recv())
    await _until_blocked(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    box.try_send("kept")
    assert box.try_recv() == "kept"


async def test_request_gets_its_reply_within_the_deadline() -> None:
    box: Mailbox[Request[str, int]] = Mailbox(4, name="svc")

    async def serve() -> None:
        req = await box.recv()
        assert not req.answered
        assert req.reply(len(req.message))
        assert req.answered

    server = asyncio.create_task(serve())
    assert await box.request("hello", timeout=1.0) == 5
    await server


async def test_request_failure_is_raised_in_the_caller() -> None:
    box: Mailbox[Request[str, int]] = Mailbox(4, name="svc")

    async def serve() -> None:
        req = await box.recv()
        assert req.fail(KeyError("nope"))

    server = asyncio.create_task(serve())
    with pytest.raises(KeyError, match="nope"):
        await box.request("x", timeout=1.0)
    await server


async def test_request_times_out_and_a_late_reply_is_counted_as_dropped() -> None:
    metrics = Metrics()
    box: Mailbox[Request[str, int]] = Mailbox(4, name="svc", metrics=metrics)
    with pytest.raises(Timeout, match="no reply from mailbox 'svc'"):
        await box.request("slow", timeout=0.01)
    req = box.try_recv()
    assert req.answered  # abandoned by its caller
    assert req.reply(1) is False
    assert req.fail(RuntimeError("late")) is False
    assert _series(metrics, "queue_dropped_total", queue="svc") == 2
    assert metrics.counters.io_timeouts_total.get("mailbox_request") == 1


async def test_request_on_a_full_mailbox_raises_busy_at_once() -> None:
    box: Mailbox[object] = Mailbox(1, name="svc")
    box.try_send("filler")
    with pytest.raises(Busy):
        await box.request("x", timeout=10.0)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
async def test_request_rejects_a_timeout_that_is_not_finite_and_positive(bad: float) -> None:
    box: Mailbox[object] = Mailbox(1, name="svc")
    with pytest.raises(ValueError, match="request timeout must be finite and > 0"):
        await box.request("x", timeout=bad)
    assert len(box) == 0


async def test_request_with_no_timeout_waits_for_the_reply() -> None:
    box: Mailbox[object] = Mailbox(1, name="svc")

    async def server() -> None:
        item = await box.recv()
        assert isinstance(item, Request)
        await asyncio.sleep(0.01)
        item.reply("pong")

    task = asyncio.ensure_future(server())
    assert await box.request("ping", timeout=None) == "pong"
    await task


async def test_close_drains_then_raises_closed_and_refuses_sends() -> None:
    metrics = Metrics()
    box: Mailbox[int] = Mailbox(4, name="q", metrics=metrics)
    box.try_send(1)
    box.try_send(2)
    box.close()
    assert box.closed
    with pytest.raises(Closed, match="'q' is closed"):
        box.try_send(3)
    with pytest.raises(Closed):
        await box.send(4)
    assert await box.recv() == 1
    assert box.try_recv() == 2
    with pytest.raises(Closed, match="closed and drained"):
        await box.recv()
    with pytest.raises(Closed):
        box.try_recv()
    assert _series(metrics, "queue_dropped_total", queue="q") == 2


async def test_close_with_discard_drops_and_counts_the_leftovers() -> None:
    metrics = Metrics()
    box: Mailbox[int] = Mailbox(4, name="q", metrics=metrics)
    for i in range(3):
        box.try_send(i)
    box.close(discard=True)
    assert len(box) == 0
    with pytest.raises(Closed):
        box.try_recv()
    assert _series(metrics, "queue_dropped_total", queue="q") == 3


async def test_close_wakes_a_waiting_receiver_and_a_waiting_sender() -> None:
    box: Mailbox[int] = Mailbox(1, name="q")
    reader_box: Mailbox[int] = Mailbox(1, name="r")
    box.try_send(0)
    sender = asyncio.create_task(box.send(1))
    reader = asyncio.create_task(reader_box.recv())
    await _until_blocked(sender, reader)
    box.close()
    reader_box.close()
    with pytest.raises(Closed):
        await asyncio.wait_for(sender, 1.0)
    with pytest.raises(Closed):
        await asyncio.wait_for(reader, 1.0)
    assert box.try_recv() == 0  # what was queued is still drained
