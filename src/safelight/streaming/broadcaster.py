"""In-process fan-out of committed events to the connections following a job.

The store is the source of truth; the broadcaster only wakes subscribers up sooner.  Each
subscription has one bounded queue.  When a queue is full, the subscriber is too slow: it
is marked overflowed and its ``on_overflow`` callback runs (the transport closes the
connection; the client resumes by cursor), so one stalled reader never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from safelight.models import Event


class EventQueue:
    """A bounded single-consumer queue: a deque and at most one waiting future.

    ``asyncio.Queue`` carries three deques and an Event per instance; with one queue per
    open stream, memory per idle connection (a DESIGN.md target) favours this one.  The
    deque (760 bytes) is made at the first put: most idle streams never get one."""

    __slots__ = ("_items", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Event] | None = None
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    def put_nowait(self, event: Event) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        elif len(items) >= self._maxsize:
            raise asyncio.QueueFull
        items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Event:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> Event:
        while not self._items:
            await self.wait()
        return self._items.popleft()

    async def wait(self) -> None:
        """Until an item is queued or ``wake()`` is called (returns at once if non-empty)."""
        if self._items:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Subscription:
    __slots__ = (
        "idle_ticks",
        "job_id",
        "on_overflow",
        "overflowed",
        "ping_due",
        "queue",
        "send_started",
        "send_timed_out",
        "stopped",
        "task",
    )

    def __init__(self, job_id: str, size: int) -> None:
        self.job_id = job_id
        self.queue = EventQueue(size)
        self.overflowed = False
        self.stopped = False  # the client went away: the follower ends at its next turn
        self.on_overflow: Callable[[], object] | None = None
        # Set by the broadcaster's ticker (one task for every stream; see Broadcaster):
        self.idle_ticks = 0  # ticks since the last event; a ping is due after a few
        self.ping_due = False
        # The transport's send guard: loop time when a write started (0: not writing) and
        # the task to cancel when it takes longer than send_timeout_s.
        self.send_started = 0.0
        self.send_timed_out = False
        self.task: asyncio.Task[Any] | None = None

    def stop(self) -> None:
        self.stopped = True
        self.queue.wake()

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        self.idle_ticks = 0
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow()

    @contextlib.contextmanager
    def guarded_send(self) -> Iterator[None]:
        """Wrap one write to the client.  A write that has not finished after
        ``send_timeout_s`` is cancelled by the ticker and surfaces here as TimeoutError.
        This replaces an ``asyncio.timeout`` per write (a timer armed and cancelled per
        event per subscriber: about a fifth of the loop's time under fan-out, py-spy)."""
        if self.task is None:
            self.task = asyncio.current_task()
        self.send_started = _now()
        try:
            yield
        except asyncio.CancelledError:
            if not self.send_timed_out or self.task is None:
                raise
            self.task.uncancel()
            raise TimeoutError("send timed out") from None
        finally:
            self.send_started = 0.0


def _now() -> float:
    return asyncio.get_running_loop().time()


class Broadcaster:
    """Fan-out plus ONE ticker task for every subscription of the process: it marks pings
    due on streams that had no event for ``ping_interval_s`` and cancels writes stuck past
    ``send_timeout_s``, so the per-event path arms no timer at all."""

    def __init__(
        self, queue_size: int, ping_interval_s: float = 15.0, send_timeout_s: float = 10.0
    ) -> None:
        self.queue_size = queue_size
        self.ping_interval_s = ping_interval_s
        self.send_timeout_s = send_timeout_s
        # Tick often enough for both: a ping goes out 1-1.25 ping intervals after the last
        # event, a stuck write is cancelled 1-1.25 send timeouts after it started.
        self.tick_s = min(ping_interval_s, send_timeout_s) / 4
        self.ping_ticks = max(1, round(ping_interval_s / self.tick_s))
        self._ticker: asyncio.Task[None] | None = None
        self._subs: dict[str, set[Subscription]] = {}
        self._last: dict[str, int] = {}  # highest seq published per followed job
        self.published = 0
        # Also told of every publish (polling answers: invalidate, wake parked polls).
        self.on_publish: list[Callable[[list[Event]], None]] = []

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(job_id, self.queue_size)
        self._subs.setdefault(job_id, set()).add(sub)
        if self._ticker is None or self._ticker.done():
            with contextlib.suppress(RuntimeError):  # no running loop: no ticker (unit tests)
                self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return sub

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = _now()
            for subs in self._subs.values():
                for sub in subs:
                    sub.idle_ticks += 1
                    if sub.idle_ticks >= self.ping_ticks:
                        sub.idle_ticks = 0
                        sub.ping_due = True
                        sub.queue.wake()
                    started = sub.send_started
                    if started and now - started > self.send_timeout_s and sub.task is not None:
                        sub.send_timed_out = True
                        sub.task.cancel()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.job_id]
                self._last.pop(sub.job_id, None)

    def publish(self, events: Iterable[Event]) -> None:
        """Called on the event loop, in commit order."""
        events = list(events)
        for hook in self.on_publish:
            hook(events)
        for event in events:
            self.published += 1
            subs = self._subs.get(event.job_id)
            if not subs:
                continue
            if event.seq > self._last.get(event.job_id, 0):
                self._last[event.job_id] = event.seq
            for sub in tuple(subs):
                sub.offer(event)

    def followed(self) -> dict[str, int]:
        """Jobs with subscribers -> the highest seq published to them (0: none yet)."""
        return {job_id: self._last.get(job_id, 0) for job_id in self._subs}

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())
