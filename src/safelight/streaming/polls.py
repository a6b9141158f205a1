"""Polling answers, computed once per job and cursor and shared by every client asking.

A thousand clients polling one running job mostly ask the same question (``events after
N``, with the same N once they have caught up).  Without sharing, each request costs two
store reads and a JSON encoding, and every parked long poll holds its own subscription
queue.  Here:

* an answer (the encoded response body and its ETag) is keyed by ``(job_id, after)`` and
  a per-job *generation* that every publish of that job bumps, so a committed event
  invalidates exactly that job's answers; concurrent askers await one computation;
* parked long polls of a job wait on ONE ``asyncio.Event`` that the job's next publish
  sets (``wake``), not on a queue each;
* a job's first event after a quiet spell opens a coalescing window, 1 ms per poll
  parked on the job up to ``coalesce_s``, and long polls that would answer inside it
  (parked, or arriving to find new events) answer at its end: with many pollers and many
  events per second one answer carries several, which is what makes long polling
  affordable (a request costs ~10x a streamed delivery, docs/benchmarks.md), while a
  lone poller is answered at once; an event waits at most ``coalesce_s``;
* a short TTL bounds staleness where publishes arrive late or not at all (scale-out with
  the LISTEN connection down): then an answer is recomputed at most every ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from safelight.errors import NotFound, SafelightError
from safelight.models import Event, dumps
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore

POLL_PAGE = 500
MAX_ANSWERS = 4096  # bounded memory: the cache is cleared when it grows past this
# The coalescing window grows with the polls parked on the job (1 ms each, up to
# ``coalesce_s``): answering them all costs ~0.1 ms each, so the window is ~10x the work
# it batches; a lone poller waits ~1 ms, 1,000 or more (by default) the whole window.
WINDOW_PER_POLL_S = 0.001


class CursorAhead(SafelightError):
    status = 400
    code = "cursor_ahead"
    title = "Cursor beyond the job's last event"

    def __init__(self, after: int, last_seq: int) -> None:
        super().__init__(f"after={after} but the job's last_seq is {last_seq}; re-read the job")
        self.last_seq = last_seq


@dataclass(frozen=True, slots=True)
class Answer:
    """One polling response: ``body`` is the encoded JSON, ``etag`` names its content."""

    job_id: str
    gen: int  # the job's publish generation the answer was made at
    events: tuple[Event, ...]
    last_seq: int
    terminal: bool
    body: bytes
    etag: str
    made_at: float

    @property
    def empty(self) -> bool:
        return not self.events


class PollAnswers:
    def __init__(
        self, store: AsyncStore, poll_after_ms: int, ttl_s: float, coalesce_s: float = 0.0
    ) -> None:
        self.store = store
        self.poll_after_ms = poll_after_ms
        self.ttl_s = ttl_s
        self.coalesce_s = coalesce_s
        self._gen: dict[str, int] = {}
        self._answers: dict[tuple[str, int, int], asyncio.Future[Answer]] = {}
        self._wake: dict[str, list[Any]] = {}  # job -> [Event, parked polls]
        self._windows: dict[str, asyncio.TimerHandle] = {}  # job -> end of its window
        self._crowd: dict[str, int] = {}  # job -> polls parked when its last window ended
        self.computed = 0  # store round trips made (for tests and the benchmark)

    # -- called by the broadcaster on every publish -------------------------------------

    def published(self, events: Iterable[Event]) -> None:
        for event in events:
            job_id = event.job_id
            if job_id in self._gen:
                self._gen[job_id] += 1
            if job_id in self._windows:
                continue
            parked = self._wake.get(job_id)
            # The crowd: polls parked now, or at the end of the last window (in a busy
            # job many are between two requests when the next event comes).
            crowd = max(parked[1] if parked else 0, self._crowd.get(job_id, 0))
            window = min(self.coalesce_s, crowd * WINDOW_PER_POLL_S)
            if window <= 0:
                self._close_window(job_id)
            else:
                # A coalescing window opens at the job's first event after a quiet spell;
                # polls that would answer inside it wait for its end.  One timer per job
                # and window, not one per poll.
                loop = asyncio.get_running_loop()
                self._windows[job_id] = loop.call_later(window, self._close_window, job_id)

    def _close_window(self, job_id: str) -> None:
        self._windows.pop(job_id, None)
        parked = self._wake.pop(job_id, None)
        if parked is not None:
            parked[0].set()
        if parked is not None and parked[1] > 0:
            self._crowd[job_id] = parked[1]
        else:
            self._crowd.pop(job_id, None)

    def holding(self, job_id: str) -> bool:
        """Whether the job's coalescing window is open: an answer with new events waits
        for its end (``wait_for_change``) to carry the events that follow them."""
        return job_id in self._windows

    # -- used by the polling route -------------------------------------------------------

    async def answer(self, job_id: str, after: int) -> Answer:
        """The shared answer for ``events after``; raises NotFound / CursorAhead."""
        if len(self._answers) >= MAX_ANSWERS or len(self._gen) >= MAX_ANSWERS:
            # Bounded memory.  Generations restart together with an empty cache, so no
            # old answer can match a restarted generation.
            self._answers.clear()
            self._gen.clear()
            self._crowd.clear()
        gen = self._gen.setdefault(job_id, 0)
        key = (job_id, after, gen)
        future = self._answers.get(key)
        if (
            future is not None
            and future.done()
            and (
                future.cancelled()
                or future.exception() is not None
                or time.monotonic() - future.result().made_at > self.ttl_s
            )
        ):
            future = None
        if future is None:
            future = asyncio.ensure_future(self._compute(job_id, after, gen))
            self._answers[key] = future
        if future.done():  # the common case once one asker has computed it
            return future.result()
        # shield: one asker that disconnects must not cancel the others' computation
        return await asyncio.shield(future)

    async def wait_for_change(self, answer: Answer, timeout_s: float) -> bool:
        """Park until the job of ``answer`` publishes again and its coalescing window is
        over (True) or ``timeout_s`` passes (False).  Every parked poll of a job shares
        one Event."""
        job_id = answer.job_id
        if self._gen.get(job_id) != answer.gen and job_id not in self._windows:
            return True  # published (and its window over) while the answer was being made
        parked = self._wake.get(job_id)
        if parked is None:
            parked = self._wake[job_id] = [asyncio.Event(), 0]
        event: asyncio.Event = parked[0]
        parked[1] += 1
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            parked[1] -= 1
            if parked[1] == 0 and self._wake.get(job_id) is parked:
                del self._wake[job_id]  # nobody waits: do not keep an Event per idle job

    async def _compute(self, job_id: str, after: int, gen: int) -> Answer:
        self.computed += 1
        job = await self.store.read(SqlStore.get_job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if after > job.last_seq:
            raise CursorAhead(after, job.last_seq)
        events = await self.store.read(SqlStore.read_events, job_id, after, POLL_PAGE)
        if events and events[-1].seq > job.last_seq:
            # Committed after the first read: re-read so that last_seq and status cover
            # every event returned (rare; the common case is two reads).
            job = await self.store.read(SqlStore.get_job, job_id)
            assert job is not None
        last = events[-1].seq if events else after
        terminal = job.terminal and last >= job.last_seq
        poll_after = 0 if len(events) == POLL_PAGE else self.poll_after_ms
        status = job.status.value
        # Events carry their JSON encoded once; the body is assembled from it.
        body = (
            '{"events":['
            + ",".join(e.json for e in events)
            + f'],"last_seq":{job.last_seq},"status":{dumps(status)},'
            + f'"terminal":{"true" if terminal else "false"},"poll_after_ms":{poll_after}}}'
        )
        etag = f'"{job_id}.{after}.{job.last_seq}.{status}.{len(events)}"'
        return Answer(
            job_id,
            gen,
            tuple(events),
            job.last_seq,
            terminal,
            body.encode(),
            etag,
            time.monotonic(),
        )
