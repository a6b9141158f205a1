"""In-process fan-out of committed events to the streams following a job.

The store is the source of truth; the broadcaster only gets events to followers sooner.
It keeps one ``Feed`` per followed job (streaming/follow.py: the live streams, written
directly, and the ones catching up, each with a bounded queue), hands every publish to
the polling answers, and runs ONE ticker task for the whole process (pings on quiet
feeds, writes stuck past ``send_timeout_s``), so the per-event path arms no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from safelight.models import Event
from safelight.streaming.feed import Feed
from safelight.streaming.writes import Wire


def _now() -> float:
    return asyncio.get_running_loop().time()


class Broadcaster:
    """The feeds of this process, plus ONE ticker task for all of them: it pings live
    streams of feeds that had no event for ``ping_interval_s`` and cancels writes stuck
    past ``send_timeout_s``."""

    def __init__(
        self,
        queue_size: int,
        ping_interval_s: float = 15.0,
        send_timeout_s: float = 10.0,
        end_delay_s: float = 0.0,
    ) -> None:
        self.queue_size = queue_size
        self.ping_interval_s = ping_interval_s
        self.send_timeout_s = send_timeout_s
        self.end_delay_s = end_delay_s  # terminal event -> the streams' ends (Feed.publish)
        # Tick often enough for both: a ping goes out 1-1.25 ping intervals after the last
        # event, a stuck write is cancelled 1-1.25 send timeouts after it started.
        self.tick_s = min(ping_interval_s, send_timeout_s) / 4
        self.ping_ticks = max(1, round(ping_interval_s / self.tick_s))
        self._ticker: asyncio.Task[None] | None = None
        self._feeds: dict[str, Feed] = {}
        self.published = 0
        # Also told of every publish (polling answers: invalidate, wake parked polls).
        self.on_publish: list[Callable[[list[Event]], None]] = []
        # Told of every write of an event: (wire, event, how many clients) (metrics).
        self.on_delivered: Callable[[Wire, Event, int], None] | None = None

    @staticmethod
    def now() -> float:
        return _now()

    def feed(self, job_id: str) -> Feed:
        """The job's feed, made on first use; starts the ticker."""
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = Feed(self, job_id)
        if self._ticker is None or self._ticker.done():
            with contextlib.suppress(RuntimeError):  # no running loop: no ticker (unit tests)
                self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return feed

    def drop_feed(self, feed: Feed) -> None:
        if self._feeds.get(feed.job_id) is feed:
            del self._feeds[feed.job_id]

    def delivered(self, wire: Wire, event: Event, count: int) -> None:
        if self.on_delivered is not None:
            self.on_delivered(wire, event, count)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.tick()

    def tick(self) -> None:
        now = _now()
        for feed in tuple(self._feeds.values()):
            feed.idle_ticks += 1
            if feed.idle_ticks >= self.ping_ticks:
                feed.idle_ticks = 0
                feed.ping()
            for stream in tuple(feed.catching):
                started = stream.send_started
                task = stream.task
                if started and now - started > self.send_timeout_s and task is not None:
                    stream.send_timed_out = True
                    task.cancel()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def publish(self, events: Iterable[Event]) -> None:
        """Called on the event loop, in commit order."""
        events = list(events)
        for hook in self.on_publish:
            hook(events)
        feeds = self._feeds
        for event in events:
            self.published += 1
            feed = feeds.get(event.job_id)
            if feed is not None:
                feed.publish(event)

    def followed(self) -> dict[str, int]:
        """Jobs with followers -> the highest seq published to them (0: none yet)."""
        return {job_id: feed.last_seq for job_id, feed in self._feeds.items()}

    def subscriber_count(self) -> int:
        return sum(len(feed) for feed in self._feeds.values())
