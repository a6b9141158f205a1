"""The fan-out core (streaming/follow.py, writes.py, broadcaster.py) over a real SQLite
store, with an in-memory ASGI connection that behaves like uvicorn's: ``send`` completes
at once unless the connection is paused (flow control), ``receive`` returns the
disconnect once the client leaves or the stream's end was written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safelight.api.streams import SSE_WIRE, WS_WIRE
from safelight.models import Event
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.streaming.broadcaster import Broadcaster
from safelight.streaming.follow import Stream, StreamState
from safelight.streaming.writes import Message, write_now
from safelight.types import EventType, JobStatus


class Conn:
    """One client connection as the ASGI server shows it to the app."""

    def __init__(self, log: list[tuple[Conn, str]] | None = None) -> None:
        self.log = log  # shared by several connections: the order of writes across them
        self.sent: list[Message] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.gone = asyncio.Event()
        self.fail = False

    async def send(self, message: Message) -> None:
        await self.writable.wait()  # uvicorn: a paused transport waits here
        if self.fail:
            raise OSError("connection lost")
        self.sent.append(message)
        if self.log is not None:
            self.log.append((self, message["type"]))
        if message["type"] == "websocket.close" or message.get("more_body") is False:
            self.gone.set()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    def seqs(self) -> list[int]:
        out = []
        for m in self.sent:
            if m["type"] == "websocket.send":
                body = json.loads(m["text"])
                if "seq" in body:
                    out.append(body["seq"])
        return out

    def kinds(self) -> list[str]:
        return [
            json.loads(m["text"])["type"] if m["type"] == "websocket.send" else m["type"]
            for m in self.sent
        ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncStore]:
    s = AsyncStore(SqlStore.for_sqlite_file(tmp_path / "test.db"))
    yield s
    s.close()


class Job:
    """A job driven by hand: every event written is published, as JobService does."""

    def __init__(self, store: AsyncStore, b: Broadcaster) -> None:
        self.store, self.b = store, b
        self.id = ""
        self.token = ""

    async def create(self) -> None:
        job, events = await self.store.write(
            SqlStore.create_job,
            settings={"prompt": "p"},
            parent_id=None,
            manage_token_hash="h",
            max_attempts=3,
            queue_limit=100,
        )
        self.id = job.id
        self.b.publish(events)

    async def start(self, publish: bool = True) -> list[Event]:
        claimed = await self.store.write(SqlStore.claim, "w1", 60_000)
        assert claimed is not None
        job, events = claimed
        self.token = job.lease_token or ""
        if publish:
            self.b.publish(events)
        return events

    async def progress(self, step: int, publish: bool = True) -> Event:
        _, event = await self.store.write(
            SqlStore.worker_event, self.id, self.token, EventType.PROGRESS, {"step": step}
        )
        if publish:
            self.b.publish([event])
        return event

    async def complete(self) -> Event:
        _, uploading = await self.store.write(
            SqlStore.worker_event,
            self.id,
            self.token,
            EventType.UPLOADING,
            {},
            status=JobStatus.UPLOADING,
        )
        self.b.publish([uploading])
        _, event = await self.store.write(
            SqlStore.worker_event,
            self.id,
            self.token,
            EventType.COMPLETED,
            {"images": []},
            status=JobStatus.COMPLETED,
        )
        self.b.publish([event])
        return event


async def created(store: AsyncStore, **broadcaster: Any) -> tuple[Broadcaster, Job]:
    """A broadcaster (as the runtime makes one) and a new queued job published to it."""
    b = Broadcaster(**broadcaster)
    job = Job(store, b)
    await job.create()
    return b, job


async def follow(
    store: AsyncStore,
    b: Broadcaster,
    job: Job,
    after: int = 0,
    log: list[tuple[Conn, str]] | None = None,
) -> tuple[Stream, Conn, asyncio.Task[None]]:
    conn = Conn(log)
    stream = Stream(store, b, job.id, after, WS_WIRE)
    welcome = await stream.open()
    task = asyncio.create_task(stream.run(conn.send, conn.receive, WS_WIRE.greeting(welcome)))
    for _ in range(200):  # until it is live (or over)
        if stream.state is not StreamState.CATCHING_UP:
            break
        await asyncio.sleep(0.005)
    return stream, conn, task


def state_of(stream: Stream) -> StreamState:
    return stream.state  # (a call: mypy narrows attributes across awaits)


async def until_live(stream: Stream) -> None:
    for _ in range(200):
        if state_of(stream) is StreamState.LIVE:
            return
        await asyncio.sleep(0.005)


def run(coro: Any) -> None:
    asyncio.run(coro)


def test_live_clients_get_every_event_in_order_from_one_shared_message(
    store: AsyncStore,
) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=10)
        (s1, c1, t1), (s2, c2, t2) = [await follow(store, b, job) for _ in range(2)]
        assert s1.state is s2.state is StreamState.LIVE
        await job.start()
        for step in range(1, 6):
            await job.progress(step)
        await job.complete()
        await asyncio.wait_for(asyncio.gather(t1, t2), 5)
        assert c1.seqs() == c2.seqs() == list(range(1, 10))
        assert c1.kinds()[0] == "welcome" and c1.kinds()[-1] == "websocket.close"
        # One message per event per wire, the same object for both clients:
        assert all(a is b_ for a, b_ in zip(c1.sent[2:-1], c2.sent[2:-1], strict=True))
        assert b.subscriber_count() == 0
        b.close()

    run(main())


def test_every_client_gets_the_terminal_event_before_any_connection_is_ended(
    store: AsyncStore,
) -> None:
    """One write log across all connections: the `completed` frames all go out in the
    publish, the ends only after ``end_delay_s`` (ending them in the same pass made the
    last clients' `completed` wait behind the closes)."""

    async def main() -> None:
        b, job = await created(store, queue_size=10, end_delay_s=0.05)
        log: list[tuple[Conn, str]] = []
        followers = [await follow(store, b, job, log=log) for _ in range(4)]
        conns = {id(conn) for _, conn, _ in followers}
        await job.start()
        await job.complete()
        assert [kind for _, kind in log[-4:]] == ["websocket.send"] * 4
        assert {id(c) for c, _ in log[-4:]} == conns
        assert all(conn.kinds()[-1] == "completed" for _, conn, _ in followers)
        await asyncio.sleep(0)  # a loop turn is not the delay: still open
        assert all(stream.state is StreamState.LIVE for stream, _, _ in followers)
        await asyncio.wait_for(asyncio.gather(*(t for _, _, t in followers)), 5)
        assert [kind for _, kind in log[-4:]] == ["websocket.close"] * 4
        assert {id(c) for c, _ in log[-4:]} == conns
        for _, conn, _ in followers:
            assert conn.kinds()[-2:] == ["completed", "websocket.close"]
        assert b.subscriber_count() == 0
        b.close()

    run(main())


def test_a_paused_client_catches_up_in_its_own_task_without_holding_up_the_others(
    store: AsyncStore,
) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=100)
        slow, slow_conn, slow_task = await follow(store, b, job)
        fast, fast_conn, fast_task = await follow(store, b, job)
        slow_conn.writable.clear()  # its socket buffer is full
        await job.start()
        await job.progress(1)
        assert slow.state is StreamState.CATCHING_UP  # dropped out of the live set
        assert fast.state is StreamState.LIVE and fast_conn.seqs() == [1, 2, 3]
        for step in range(2, 5):
            await job.progress(step)
        assert fast_conn.seqs() == [1, 2, 3, 4, 5, 6]
        slow_conn.writable.set()  # it drains
        await until_live(slow)
        assert state_of(slow) is StreamState.LIVE  # level again: back in the live set
        await job.complete()
        await asyncio.wait_for(asyncio.gather(slow_task, fast_task), 5)
        assert slow_conn.seqs() == fast_conn.seqs() == list(range(1, 9))
        b.close()

    run(main())


def test_a_client_that_falls_a_whole_queue_behind_is_ended_as_slow(store: AsyncStore) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=3)
        slow, conn, task = await follow(store, b, job)
        conn.writable.clear()
        await job.start()  # its write suspends: catching up, queue empty
        for step in range(1, 6):  # five more than fit in its queue of 3
            await job.progress(step)
        assert slow.overflowed
        conn.writable.set()
        await asyncio.wait_for(task, 5)
        assert conn.sent[-1] == WS_WIRE.slow()  # close 1013: resume from your cursor
        assert slow.state is StreamState.ENDED and b.subscriber_count() == 0
        b.close()

    run(main())


def test_a_write_stuck_past_the_send_timeout_ends_the_stream(store: AsyncStore) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=10, ping_interval_s=60, send_timeout_s=0.05)
        stream, conn, task = await follow(store, b, job)
        conn.writable.clear()  # and it never drains
        await job.start()
        await asyncio.wait_for(task, 5)  # the connection's task returns: aborted
        assert stream.aborted and stream.state is StreamState.ENDED
        assert b.subscriber_count() == 0
        b.close()

    run(main())


def test_a_gap_in_what_is_published_is_backfilled_from_the_store(store: AsyncStore) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=10)
        _stream, conn, task = await follow(store, b, job)
        await job.start(publish=False)  # committed, never published (a lost NOTIFY)
        await job.progress(1, publish=False)
        await job.progress(2)  # seq 4: the stream sees a gap after 1
        await job.complete()
        await asyncio.wait_for(task, 5)
        assert conn.seqs() == [1, 2, 3, 4, 5, 6]
        b.close()

    run(main())


def test_backlog_then_live_with_no_gap_and_no_duplicate(store: AsyncStore) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=10)
        await job.start()
        events = [await job.progress(step, publish=False) for step in range(1, 4)]
        stream, conn, task = await follow(store, b, job, after=1)  # backlog: 2..5
        assert stream.state is StreamState.LIVE and conn.seqs() == [2, 3, 4, 5]
        b.publish(events)  # late publishes of events it already has: dropped
        await job.progress(4)
        await job.complete()
        await asyncio.wait_for(task, 5)
        assert conn.seqs() == [2, 3, 4, 5, 6, 7, 8]
        b.close()

    run(main())


def test_quiet_live_streams_get_pings_with_their_cursor(store: AsyncStore) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=10, ping_interval_s=0.04, send_timeout_s=10)
        _stream, conn, task = await follow(store, b, job)
        await asyncio.sleep(0.2)
        pings = [json.loads(m["text"]) for m in conn.sent if '"ping"' in m.get("text", "")]
        assert pings and all(p == {"type": "ping", "last_seq": 1} for p in pings)
        conn.gone.set()  # the client leaves
        await asyncio.wait_for(task, 5)
        assert b.subscriber_count() == 0
        b.close()

    run(main())


def test_a_client_that_goes_away_is_unsubscribed_and_a_failed_write_drops_it(
    store: AsyncStore,
) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=10)
        (s1, c1, t1), (s2, c2, t2) = [await follow(store, b, job) for _ in range(2)]
        c1.gone.set()
        await asyncio.wait_for(t1, 5)
        assert s1.state is StreamState.ENDED and b.subscriber_count() == 1
        c2.fail = True  # its next write raises (the socket is gone)
        await job.start()
        await asyncio.wait_for(t2, 5)
        assert s2.aborted and b.subscriber_count() == 0
        b.close()

    run(main())


def test_stop_ends_a_live_sse_stream_with_a_complete_body(store: AsyncStore) -> None:
    async def main() -> None:
        b, job = await created(store, queue_size=10)
        conn = Conn()
        stream = Stream(store, b, job.id, 0, SSE_WIRE)
        welcome = await stream.open()
        task = asyncio.create_task(
            stream.run(conn.send, conn.receive, SSE_WIRE.greeting(welcome, 1000))
        )
        await asyncio.sleep(0.05)
        assert stream.state is StreamState.LIVE
        stream.stop()
        await asyncio.wait_for(task, 5)
        assert conn.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert conn.sent[1]["body"].startswith(b"id: 1\ndata: ")
        b.close()

    run(main())


def test_write_now_completes_suspends_or_raises() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        log: list[str] = []

        async def send(message: Message) -> None:
            if message["wait"]:
                await gate.wait()
            if message.get("boom"):
                raise OSError("gone")
            log.append(message["name"])

        assert write_now(send, {"name": "now", "wait": False}) is None
        assert log == ["now"]
        pending = write_now(send, {"name": "later", "wait": True})
        assert pending is not None and log == ["now"]
        finishing = asyncio.create_task(pending.finish())
        await asyncio.sleep(0.01)
        assert not finishing.done()
        gate.set()
        await asyncio.wait_for(finishing, 1)
        assert log == ["now", "later"]
        with pytest.raises(OSError):
            write_now(send, {"name": "x", "wait": False, "boom": True})
        gate.clear()
        pending = write_now(send, {"name": "y", "wait": True, "boom": True})
        assert pending is not None
        finishing = asyncio.create_task(pending.finish())
        gate.set()
        with pytest.raises(OSError):
            await asyncio.wait_for(finishing, 1)
        gate.clear()
        pending = write_now(send, {"name": "z", "wait": True})
        assert pending is not None
        finishing = asyncio.create_task(pending.finish())
        await asyncio.sleep(0)
        finishing.cancel()  # the ticker cancelling a stuck write
        with pytest.raises(asyncio.CancelledError):
            await finishing
        assert "z" not in log

    run(main())
