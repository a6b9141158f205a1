"""The one delivery algorithm behind the streaming transports (WebSocket and SSE).

A ``Stream`` is one client following one job from a cursor.  It subscribes FIRST, then
reads the backlog ``seq > after`` from the store, then what was published meanwhile,
dropping any ``seq`` already sent and backfilling any gap from the store; it ends after the
terminal event.  While it does that it is *catching up*: it writes from its own task, and
live events wait in its bounded queue.

Once nothing is left to catch up it joins its job's ``Feed`` and is *live*: from then on
the feed writes each event to it directly as the event is published, one pre-encoded
message per wire shared by every live client, with no task wake-up per client
(docs/benchmarks.md, "What changed in issue 11").  A live client whose socket cannot take
a write at once (flow control), or that sees a gap, drops back to catching up, in a task
of its own, until it is level again; one that falls a whole queue behind is ended as a
slow consumer and resumes by cursor, so one stalled reader never slows the others.

Between events the connection's task only waits for the client to go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from safelight.errors import NotFound, SafelightError
from safelight.models import Event
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.streaming.writes import Message, Pending, Receive, Send, Wire, write_now

if TYPE_CHECKING:
    from safelight.streaming.broadcaster import Broadcaster
    from safelight.streaming.feed import Feed

BACKLOG_PAGE = 500
DISCONNECTS = frozenset({"websocket.disconnect", "http.disconnect"})


class SlowConsumer(SafelightError):
    code = "slow_consumer"
    title = "The client did not read fast enough; resume from your cursor"


class StreamState(enum.Enum):
    CATCHING_UP = "catching_up"  # its own task writes; live events queue
    LIVE = "live"  # the feed writes each event as it is published
    ENDED = "ended"


class Next(enum.Enum):
    """What comes after a write: after one that suspended while live (``next_step``),
    and as the outcome of catching up."""

    CONTINUE = "continue"  # more events
    LIVE = "live"  # caught up: joined the feed
    END = "end"  # the terminal event was written: send the end next
    DONE = "done"  # the end was written


class Stream:
    """One client following one job over one wire (see the module docstring)."""

    __slots__ = (
        "aborted",
        "after",
        "broadcaster",
        "feed",
        "job_id",
        "last_sent",
        "next_step",
        "overflowed",
        "owner",
        "pending",
        "queue",
        "send",
        "send_started",
        "send_timed_out",
        "state",
        "stopped",
        "store",
        "task",
        "wire",
    )

    def __init__(
        self,
        store: AsyncStore,
        broadcaster: Broadcaster,
        job_id: str,
        after: int,
        wire: Wire,
    ) -> None:
        self.store = store
        self.broadcaster = broadcaster
        self.job_id = job_id
        self.after = max(0, after)
        self.last_sent = self.after
        self.wire = wire
        self.send: Send = _not_started
        self.state = StreamState.CATCHING_UP
        self.queue: deque[Event] | None = None  # live events while catching up (bounded)
        self.feed: Feed | None = None
        self.overflowed = False
        self.stopped = False  # end at the next turn (shutdown)
        self.aborted = False  # ended without a proper end message (stalled, gone)
        self.pending: Pending | None = None  # a write that suspended while live
        self.next_step = Next.CONTINUE
        self.owner: asyncio.Task[Any] | None = None  # the connection's task
        self.task: asyncio.Task[Any] | None = None  # the task writing while catching up
        # The send guard: loop time when a write started (0: not writing); the ticker
        # cancels ``task`` when a write takes longer than send_timeout_s.
        self.send_started = 0.0
        self.send_timed_out = False

    # -- opening ---------------------------------------------------------------------

    async def open(self) -> dict[str, Any]:
        """Subscribe, then snapshot the job: the welcome's body.  Raises NotFound (and
        unsubscribes) before anything is sent."""
        self.feed = self.broadcaster.feed(self.job_id)
        self.feed.catching.add(self)
        job = await self.store.read(SqlStore.get_job, self.job_id)
        if job is None:
            self.close()
            raise NotFound(f"no job {self.job_id}")
        body: dict[str, Any] = {
            "type": "welcome",
            "job_id": self.job_id,
            "transport": self.wire.transport.value,
            "last_seq": job.last_seq,
            "status": job.status.value,
        }
        if self.after > job.last_seq:
            # A cursor from the future is a client bug (API.md): say so, send nothing older.
            body["reset"] = True
            self.after = self.last_sent = job.last_seq
        if job.terminal and self.after >= job.last_seq:
            self.state = StreamState.ENDED  # nothing will ever follow: the caller says so
        return body

    @property
    def done(self) -> bool:
        return self.state is StreamState.ENDED

    # -- the connection's task -------------------------------------------------------

    async def run(self, send: Send, receive: Receive, greeting: Message) -> None:
        """From the connection's own task, once the response has started: write the
        welcome, catch up, then wait until the client goes away or the stream ends (the
        feed, or a catch-up task, writes from then on)."""
        self.send = send
        self.owner = asyncio.current_task()
        try:
            try:
                await self._write(greeting)
                del greeting  # this frame lives as long as the stream
            except (TimeoutError, OSError, RuntimeError):
                # Gone already.  (A WebSocket client that left between its upgrade and
                # our accept: uvicorn refuses the first send as out of order; chaos R9.)
                return
            if self.state is StreamState.CATCHING_UP:
                await self.catch_up()
            else:  # nothing will follow the welcome: just the end
                with contextlib.suppress(TimeoutError, OSError, RuntimeError):
                    await self._write(self.wire.end())
            if self.aborted:
                return
            # Hold until the client goes away (in this frame: one frame less per idle
            # stream).  Clients send nothing we need; a WebSocket message is ignored.
            try:
                while (await receive())["type"] not in DISCONNECTS:
                    pass
            except asyncio.CancelledError:
                owner = self.owner
                if not self.aborted or owner is None or owner.cancelling() > 1:
                    raise
                owner.uncancel()  # our own wake-up: the stream was aborted by its writer
        finally:
            self.close()

    def close(self) -> None:
        """The client went away or the stream is over: unsubscribe, stop any writer."""
        was = self.state
        self._ended()
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        task = self.task
        self.task = None
        if (
            was is not StreamState.ENDED
            and task is not None
            and task is not self.owner
            and task is not asyncio.current_task()
        ):
            task.cancel()

    def stop(self) -> None:
        """End the stream at its next turn, with its normal end (server shutdown)."""
        if self.state is StreamState.LIVE:
            self._end_live()
        elif self.state is StreamState.CATCHING_UP:
            self.stopped = True

    # -- catching up (its own task) --------------------------------------------------

    def offer(self, event: Event) -> None:
        """A live event while catching up: queue it (bounded)."""
        if self.overflowed:
            return
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()  # made at the first event: most never get one
        elif len(queue) >= self.broadcaster.queue_size:
            self.overflowed = True
            return
        queue.append(event)

    async def catch_up(self) -> None:
        """Write what this client lacks, then join the feed.  Ends the stream instead
        after the terminal event, on overflow, on a stalled write or when the client is
        gone."""
        try:
            outcome = await self._catch_up()
            if outcome is Next.LIVE:
                return
            if outcome is Next.END:
                await self._write(self.wire.end())
        except (SlowConsumer, TimeoutError):
            # A stalled or slow reader: say so if the socket takes it (bounded), else
            # drop it; the store is the truth and it resumes by cursor.
            said = False
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.send(self.wire.slow())
                    said = True
            if not said:
                self._abort()
                return
        except (OSError, RuntimeError):
            # The client is gone (the server refuses to write to a closed connection).
            self._abort()
            return
        self._ended()

    def _ended(self) -> None:
        """Over: leave the feed (after a normal end, the connection's task returns at
        the disconnect that follows)."""
        self.state = StreamState.ENDED
        if self.feed is not None:
            self.feed.remove(self)
            self.feed = None

    async def _catch_up(self) -> Next:
        pending, self.pending = self.pending, None
        if pending is not None:
            with self._guard():
                await pending.finish()
            if self.next_step is Next.DONE:
                return Next.DONE
            if self.next_step is Next.END:
                return Next.END
        async for _event, final in self._backfill():
            if final:
                return Next.END
        while True:
            if self.overflowed:
                raise SlowConsumer()
            if self.stopped or self.state is StreamState.ENDED or self.feed is None:
                return Next.END
            queue = self.queue
            if not queue:
                # Level with the feed, and no await since the last check: join it.
                self.queue = None
                self.feed.join(self)
                return Next.LIVE
            event = queue.popleft()
            if event.seq <= self.last_sent:
                continue
            if event.seq > self.last_sent + 1:
                # Published out of order or missed: the store has the truth.
                async for _missed, final in self._backfill():
                    if final:
                        return Next.END
                continue
            self.last_sent = event.seq
            await self._write(self.wire.event(event))
            self.broadcaster.delivered(self.wire, event, 1)
            if event.terminal:
                return Next.END

    async def _backfill(self) -> AsyncIterator[tuple[Event, bool]]:
        """Write the events after ``last_sent`` from the store, yielding each with whether
        it ends the stream: a terminal event ends it only when nothing follows it (a
        retried job's log goes on after its ``failed`` event)."""
        while True:
            batch = await self.store.read(
                SqlStore.read_events, self.job_id, self.last_sent, BACKLOG_PAGE
            )
            more = len(batch) == BACKLOG_PAGE
            for index, event in enumerate(batch):
                self.last_sent = event.seq
                await self._write(self.wire.event(event))
                self.broadcaster.delivered(self.wire, event, 1)
                yield event, event.terminal and index == len(batch) - 1 and not more
            if not more:
                return

    async def _write(self, message: Message) -> None:
        with self._guard():
            await self.send(message)

    @contextlib.contextmanager
    def _guard(self) -> Any:
        """A write that has not finished after ``send_timeout_s`` is cancelled by the
        broadcaster's ticker and surfaces here as TimeoutError: one ticker for every
        stream instead of a timer per write (a fifth of the loop's time under fan-out,
        py-spy)."""
        task = asyncio.current_task()
        self.task = task
        self.send_started = self.broadcaster.now()
        try:
            yield
        except asyncio.CancelledError:
            if not self.send_timed_out or task is None:
                raise
            self.send_timed_out = False
            task.uncancel()
            raise TimeoutError("send timed out") from None
        finally:
            self.send_started = 0.0

    def _abort(self) -> None:
        """End without a proper end message; wake the connection's task so it returns."""
        self.aborted = True
        owner = self.owner
        self.close()
        if owner is not None and owner is not asyncio.current_task():
            owner.cancel()

    # -- live (called by the feed, synchronously) ------------------------------------

    def push(self, message: Message, next_step: Next = Next.CONTINUE) -> bool:
        """Write one message now.  False when the stream is no longer live: the client
        is gone, or its socket could not take the write at once and the stream went
        back to catching up (``next_step`` says what follows that write)."""
        try:
            pending = write_now(self.send, message)
        except Exception:
            self._abort()  # the client is gone
            return False
        if pending is None:
            return True
        self.pending = pending
        self.next_step = next_step
        self.demote()
        return False

    def demote(self) -> None:
        """Live -> catching up, in a task of its own (a paused socket, a gap)."""
        feed = self.feed
        if feed is None or self.state is not StreamState.LIVE:
            return
        feed.leave(self)
        self.state = StreamState.CATCHING_UP
        self.task = asyncio.get_running_loop().create_task(self._catch_up_task())

    async def _catch_up_task(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # closed: the client went away
            await self.catch_up()

    def _end_live(self) -> None:
        if self.push(self.wire.end(), Next.DONE):
            self._ended()

    def live_event(self, event: Event, message: Message, terminal: bool) -> bool:
        """The feed's per-event step for this stream: True if the message was written.
        (``terminal`` is ``event.terminal``, read once per event, not per client.)"""
        seq = event.seq
        if seq <= self.last_sent:
            return False  # already sent (it joined from a backlog that held it)
        if seq != self.last_sent + 1:
            self.offer(event)
            self.demote()  # a gap: the store has the truth
            return False
        self.last_sent = seq
        if terminal:
            # Written now; the end follows in ``end_after`` once every client
            # has the terminal event (a paused socket ends from its catch-up task).
            self.push(message, Next.END)
            return True
        return self.push(message)

    def end_after(self, terminal_seq: int) -> None:
        """The feed's second pass over a terminal event: the normal end (WS close 1000,
        SSE end of body) for a stream that is still live and was sent that event."""
        if self.state is StreamState.LIVE and self.last_sent == terminal_seq:
            self._end_live()


async def _not_started(message: Message) -> None:
    raise RuntimeError("Stream.run() has not started")
