"""The connection ladder's decisions, against fake transports (see fakes.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from safelight.client.errors import ConnectionFailed, TransportRefused
from safelight.client.stream import StreamSettings, full_jitter
from safelight.types import Transport

from .fakes import FAST, Behaviour, FakeLog, collect, stream

pytestmark = pytest.mark.anyio


def seqs(events: list) -> list[int]:
    return [e.seq for e in events]


async def test_websocket_first_whole_log_then_stop_after_terminal() -> None:
    log = FakeLog()
    log.run(steps=3)
    s, _ = stream(log)
    events = await collect(s)
    assert seqs(events) == list(range(1, 7))
    assert {e.transport for e in events} == {Transport.WS}
    assert events[-1].type == "completed"
    assert s.state == "done"
    assert s.cursor == 6


async def test_live_events_after_cursor() -> None:
    log = FakeLog()
    log.add("queued", position=1)
    s, _ = stream(log, after=1)

    async def produce() -> None:
        await asyncio.sleep(0.02)
        await log.publish("running")
        await log.publish("completed")

    task = asyncio.ensure_future(produce())
    events = await collect(s)
    await task
    assert seqs(events) == [2, 3]


async def test_websocket_refused_steps_down_to_sse_at_once() -> None:
    log = FakeLog()
    log.run()
    log.behaviour[Transport.WS] = Behaviour("refuse")
    s, _ = stream(log)
    events = await collect(s)
    assert {e.transport for e in events} == {Transport.SSE}
    assert log.behaviour[Transport.WS].opens == 1
    assert s.reason is not None
    assert "refused" in s.reason


async def test_websocket_and_sse_refused_polls() -> None:
    log = FakeLog()
    log.run()
    log.behaviour[Transport.WS] = Behaviour("refuse")
    log.behaviour[Transport.SSE] = Behaviour("refuse")
    s, _ = stream(log)
    events = await collect(s)
    assert seqs(events) == list(range(1, 7))
    assert {e.transport for e in events} == {Transport.POLL}


async def test_websocket_without_welcome_steps_down_after_open_timeout() -> None:
    log = FakeLog()
    log.run()
    log.behaviour[Transport.WS] = Behaviour("hang")
    s, _ = stream(log, settings=StreamSettings(**{**FAST.__dict__, "ws_open_timeout_s": 0.05}))
    events = await collect(s)
    assert {e.transport for e in events} == {Transport.SSE}
    assert "not confirmed within 0.05 s" in (s.reason or "")


async def test_drop_reconnects_same_transport_without_loss_or_repeat() -> None:
    log = FakeLog()
    log.run(steps=8)
    log.behaviour[Transport.WS] = Behaviour("ok", ["drop:2", "drop:3", "ok"])
    s, client = stream(log)
    events = await collect(s)
    assert seqs(events) == list(range(1, 12))
    assert {e.transport for e in events} == {Transport.WS}
    # Each reconnect resumed from the cursor.
    assert [c.after for c in client.connections[:3]] != [0, 0, 0]
    assert [c.transport for c in client.connections] == [Transport.WS] * 3


async def test_repeated_failures_step_down_after_backoff() -> None:
    log = FakeLog()
    log.run(steps=5)
    # Works once (delivers 1 event), then fails every time: 3 failures -> SSE.
    log.behaviour[Transport.WS] = Behaviour("fail", ["drop:1"])
    s, _ = stream(log)
    events = await collect(s)
    assert seqs(events) == list(range(1, 9))
    assert events[0].transport is Transport.WS
    assert events[-1].transport is Transport.SSE
    assert log.behaviour[Transport.WS].opens == 1 + 2  # the drop counts as failure 1
    assert "failed 3 times" in (s.reason or "")


async def test_duplicates_are_dropped() -> None:
    log = FakeLog()
    log.run(steps=4)
    log.behaviour[Transport.WS] = Behaviour("ok", ["drop:3", "dup"])
    s, _ = stream(log)
    events = await collect(s)
    assert seqs(events) == list(range(1, 8))


async def test_gap_is_backfilled_with_a_poll() -> None:
    log = FakeLog()
    log.run(steps=4)
    log.behaviour[Transport.WS] = Behaviour("skip:4")
    s, _ = stream(log)
    events = await collect(s)
    assert seqs(events) == list(range(1, 8))
    assert events[3].transport is Transport.POLL  # the backfilled one
    assert log.polls == [(3, 0)]


async def test_failed_then_retried_is_not_the_end() -> None:
    log = FakeLog()
    log.add("queued")
    log.add("running")
    log.add("failed", error={"type": "provider", "code": "x", "message": "m", "retryable": True})
    log.add("retry", attempt=2, max_attempts=3)
    log.add("queued")
    log.add("running")
    log.add("completed")
    for transport in Transport:
        s, _ = stream(log, transport=transport)
        events = await collect(s)
        assert seqs(events) == list(range(1, 8)), transport
        assert events[-1].type == "completed"


async def test_live_failure_ends_the_stream() -> None:
    log = FakeLog()
    log.add("queued")
    s, _ = stream(log)

    async def produce() -> None:
        await asyncio.sleep(0.02)
        await log.publish("failed", error={"type": "provider", "code": "x", "message": "m"})

    task = asyncio.ensure_future(produce())
    events = await collect(s)
    await task
    assert [e.type for e in events] == ["queued", "failed"]


async def test_cursor_at_terminal_ends_without_events() -> None:
    log = FakeLog()
    log.run()
    for transport in Transport:
        s, _ = stream(log, after=log.last_seq, transport=transport)
        assert await collect(s) == []


async def test_cursor_beyond_log_resets_from_the_job() -> None:
    log = FakeLog()
    log.add("queued")
    log.add("running")
    s, client = stream(log, after=50)

    async def produce() -> None:
        await asyncio.sleep(0.05)
        await log.publish("completed")

    task = asyncio.ensure_future(produce())
    events = await collect(s)
    await task
    assert seqs(events) == [3]
    assert s.resets == 1
    assert client.gets == 1
    assert s.job is not None


async def test_poll_cursor_beyond_log_resets() -> None:
    log = FakeLog()
    log.run()
    s, client = stream(log, after=50, transport="poll")
    assert await collect(s) == []
    assert s.resets == 1
    assert client.gets == 1


async def test_probe_steps_back_up_to_websocket() -> None:
    log = FakeLog()
    log.add("queued")
    log.behaviour[Transport.WS] = Behaviour("ok", ["refuse"])
    settings = StreamSettings(**{**FAST.__dict__, "probe_interval_s": 0.05})
    s, _ = stream(log, settings=settings)
    first = await s.__anext__()
    assert first.transport is Transport.SSE
    await asyncio.sleep(0.1)
    await log.publish("running")
    for _ in range(20):
        await log.publish("progress", step=1, total_steps=1, fraction=1.0)
        await asyncio.sleep(0.02)
    await log.publish("completed")
    rest = await collect(s)
    assert seqs([first, *rest]) == list(range(1, log.last_seq + 1))
    assert rest[-1].transport is Transport.WS
    assert s.reason == "stepped back up to WebSocket"


async def test_forced_transport_refused_raises() -> None:
    log = FakeLog()
    log.run()
    log.behaviour[Transport.SSE] = Behaviour("refuse")
    s, _ = stream(log, transport="sse")
    with pytest.raises(TransportRefused):
        await collect(s)


async def test_forced_transport_only_that_one() -> None:
    log = FakeLog()
    log.run()
    s, client = stream(log, transport=Transport.POLL)
    events = await collect(s)
    assert {e.transport for e in events} == {Transport.POLL}
    assert {c.transport for c in client.connections} == {Transport.POLL}


async def test_gives_up_when_nothing_connects() -> None:
    log = FakeLog()
    log.run()
    for t in Transport:
        log.behaviour[t] = Behaviour("fail")
    settings = StreamSettings(**{**FAST.__dict__, "give_up_after_s": 0.1})
    s, _ = stream(log, settings=settings)
    with pytest.raises(ConnectionFailed, match="no connection"):
        await collect(s)
    assert s.state == "done"


async def test_cancelled_read_resumes_without_loss() -> None:
    """The sync wrapper's Ctrl-C cancels a waiting ``__anext__``; the next call must not
    lose or repeat anything."""
    log = FakeLog()
    log.add("queued")
    s, _ = stream(log)
    assert (await s.__anext__()).seq == 1
    waiting = asyncio.ensure_future(s.__anext__())
    await asyncio.sleep(0.02)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await log.publish("running")
    await log.publish("completed")
    assert seqs(await collect(s)) == [2, 3]


def test_full_jitter_is_bounded() -> None:
    rng = random.Random(1)
    for failures in range(1, 12):
        delay = full_jitter(failures, 0.5, 10.0, rng)
        assert 0 <= delay <= min(10.0, 0.5 * 2 ** (failures - 1))
