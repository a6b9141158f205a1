"""Fan-out: order per subscriber, isolation of a slow subscriber."""

from __future__ import annotations

import asyncio

import pytest

from safelight.models import Event
from safelight.streaming.broadcaster import Broadcaster
from safelight.types import EventType


def ev(job: str, seq: int) -> Event:
    return Event(job, seq, EventType.PROGRESS, 1, 0, {})


def test_events_reach_only_that_jobs_subscribers_in_order() -> None:
    b = Broadcaster(queue_size=10)
    a1, a2, other = b.subscribe("a"), b.subscribe("a"), b.subscribe("b")
    b.publish([ev("a", 1), ev("b", 1), ev("a", 2)])
    for sub in (a1, a2):
        assert [sub.queue.get_nowait().seq for _ in range(2)] == [1, 2]
    assert other.queue.qsize() == 1
    b.unsubscribe(a1)
    b.unsubscribe(a2)
    b.unsubscribe(other)
    assert b.subscriber_count() == 0


def test_a_full_queue_marks_only_that_subscriber_and_calls_its_overflow_hook() -> None:
    b = Broadcaster(queue_size=2)
    slow, fast = b.subscribe("a"), b.subscribe("a")
    calls: list[str] = []
    slow.on_overflow = lambda: calls.append("slow")
    for seq in (1, 2):
        b.publish([ev("a", seq)])
        fast.queue.get_nowait()  # the fast one keeps reading
    b.publish([ev("a", 3)])
    b.publish([ev("a", 4)])  # ignored for the overflowed subscriber: no second call
    assert slow.overflowed and calls == ["slow"]
    assert not fast.overflowed
    assert [fast.queue.get_nowait().seq for _ in range(2)] == [3, 4]


def test_the_ticker_marks_a_ping_due_only_on_quiet_subscriptions() -> None:
    async def main() -> None:
        b = Broadcaster(queue_size=10, ping_interval_s=0.05, send_timeout_s=10)
        quiet, busy = b.subscribe("a"), b.subscribe("b")
        waiter = asyncio.create_task(quiet.queue.wait())
        for seq in range(1, 40):  # an event every 5 ms keeps `busy` from going quiet
            b.publish([ev("b", seq)])
            busy.queue.get_nowait()
            await asyncio.sleep(0.005)
        await asyncio.wait_for(waiter, 5)  # woken by the ticker, with nothing queued
        assert quiet.ping_due and quiet.queue.qsize() == 0
        assert not busy.ping_due
        b.close()

    asyncio.run(main())


def test_a_write_stuck_past_the_send_timeout_is_cancelled_as_a_timeout() -> None:
    async def main() -> None:
        b = Broadcaster(queue_size=10, ping_interval_s=60, send_timeout_s=0.05)
        sub = b.subscribe("a")
        with sub.guarded_send():
            await asyncio.sleep(0)  # a write that completes: untouched
        with pytest.raises(TimeoutError), sub.guarded_send():
            await asyncio.sleep(30)  # a write that never completes
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        b.close()

    asyncio.run(main())
