"""In-process fan-out of committed events to the connections following a job.

The store is the source of truth; the broadcaster only wakes subscribers up sooner.  Each
subscription has one bounded queue.  When a queue is full, the subscriber is too slow: it
is marked overflowed and its ``on_overflow`` callback runs (the transport closes the
connection; the client resumes by cursor), so one stalled reader never slows the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

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
    __slots__ = ("job_id", "on_overflow", "overflowed", "queue", "stopped")

    def __init__(self, job_id: str, size: int) -> None:
        self.job_id = job_id
        self.queue = EventQueue(size)
        self.overflowed = False
        self.stopped = False  # the client went away: the follower ends at its next turn
        self.on_overflow: Callable[[], object] | None = None

    def stop(self) -> None:
        self.stopped = True
        self.queue.wake()

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow()


class Broadcaster:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = {}
        self._last: dict[str, int] = {}  # highest seq published per followed job
        self.published = 0
        # Also told of every publish (polling answers: invalidate, wake parked polls).
        self.on_publish: list[Callable[[list[Event]], None]] = []

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(job_id, self.queue_size)
        self._subs.setdefault(job_id, set()).add(sub)
        return sub

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
