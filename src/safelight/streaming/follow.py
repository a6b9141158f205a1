"""The one delivery algorithm behind every streaming transport.

Per subscriber: register for live events FIRST, then read the backlog ``seq > after`` from
the store, then live events, dropping any ``seq`` already sent and backfilling any gap from
the store.  Ends after the terminal event.  Yields ``Event`` objects and ``Control`` frames
(welcome, ping) for the transport to encode.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from safelight.errors import NotFound, SafelightError
from safelight.models import Event, dumps
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.streaming.broadcaster import Broadcaster, Subscription
from safelight.types import Transport

BACKLOG_PAGE = 500


class SlowConsumer(SafelightError):
    code = "slow_consumer"
    title = "The client did not read fast enough; resume from your cursor"


@dataclass(slots=True)
class Control:
    """A frame that is not an event (no seq): welcome, ping."""

    type: str
    body: dict[str, Any]

    @property
    def json(self) -> str:
        return dumps(self.body)


class Follower:
    """Yields everything a client following ``job_id`` from ``after`` must receive."""

    __slots__ = (
        "after",
        "broadcaster",
        "done",
        "job_id",
        "last_sent",
        "store",
        "sub",
        "transport",
    )

    def __init__(
        self,
        store: AsyncStore,
        broadcaster: Broadcaster,
        job_id: str,
        after: int,
        transport: Transport,
    ) -> None:
        self.store = store
        self.broadcaster = broadcaster
        self.job_id = job_id
        self.after = max(0, after)
        self.transport = transport
        self.sub: Subscription | None = None
        self.last_sent = self.after
        self.done = False

    async def open(self) -> Control:
        """Subscribe, then snapshot the job.  Raises NotFound before anything is sent."""
        self.sub = self.broadcaster.subscribe(self.job_id)
        job = await self.store.read(SqlStore.get_job, self.job_id)
        if job is None:
            self.close()
            raise NotFound(f"no job {self.job_id}")
        body: dict[str, Any] = {
            "type": "welcome",
            "job_id": self.job_id,
            "transport": self.transport.value,
            "last_seq": job.last_seq,
            "status": job.status.value,
        }
        if self.after > job.last_seq:
            # A cursor from the future is a client bug (API.md): say so, send nothing older.
            body["reset"] = True
            self.after = self.last_sent = job.last_seq
        self.done = job.terminal and self.after >= job.last_seq
        return Control("welcome", body)

    def guarded_send(self) -> contextlib.AbstractContextManager[None]:
        """Wrap each write to the client in this (see ``Subscription.guarded_send``)."""
        assert self.sub is not None, "open() first"
        return self.sub.guarded_send()

    def interrupt(self) -> None:
        """The client disconnected: end ``events()`` at its next turn (callable from any
        task on the loop)."""
        if self.sub is not None:
            self.sub.stop()

    def close(self) -> None:
        if self.sub is not None:
            self.broadcaster.unsubscribe(self.sub)
            self.sub = None

    async def _backfill(self) -> AsyncIterator[tuple[Event, bool]]:
        """Events after ``last_sent`` from the store, each with whether it ends the stream:
        a terminal event ends it only when nothing follows it (a retried job's log goes
        on after its ``failed`` event)."""
        while True:
            batch = await self.store.read(
                SqlStore.read_events, self.job_id, self.last_sent, BACKLOG_PAGE
            )
            more = len(batch) == BACKLOG_PAGE
            for index, event in enumerate(batch):
                self.last_sent = event.seq
                yield event, event.terminal and index == len(batch) - 1 and not more
            if not more:
                return

    async def events(self) -> AsyncIterator[Event | Control]:
        assert self.sub is not None, "open() first"
        if self.done:
            return
        async for event, final in self._backfill():
            yield event
            if final:
                return
        sub = self.sub
        queue = sub.queue
        while True:
            if sub.overflowed:
                raise SlowConsumer()
            if sub.stopped:
                return
            # Hot path (runs per event per subscriber): take a ready event without awaiting;
            # when there is none, wait with no timer: the broadcaster's one ticker wakes
            # this subscription when a ping is due (a timer per wait was ~10 % of the
            # loop's time under fan-out, py-spy).
            try:
                event = queue.get_nowait()
            except asyncio.QueueEmpty:
                if sub.ping_due:
                    sub.ping_due = False
                    yield Control("ping", {"type": "ping", "last_seq": self.last_sent})
                else:
                    await queue.wait()
                continue
            if event.seq <= self.last_sent:
                continue
            if event.seq > self.last_sent + 1:
                # Published out of order or lost in a queue: the store has the truth.
                async for missed, final in self._backfill():
                    yield missed
                    if final:
                        return
                continue
            self.last_sent = event.seq
            yield event
            if event.terminal:
                return
