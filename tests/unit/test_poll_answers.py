"""Shared polling answers (streaming/polls.py) over a real SQLite store: one computation
per job and cursor, invalidated by a publish; one wake-up Event per job for parked polls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from safelight.errors import NotFound
from safelight.models import Event
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.streaming.polls import CursorAhead, PollAnswers
from safelight.types import EventType


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncStore]:
    s = AsyncStore(SqlStore.for_sqlite_file(tmp_path / "test.db"))
    yield s
    s.close()


async def new_job(store: AsyncStore) -> tuple[str, list[Event]]:
    job, events = await store.write(
        SqlStore.create_job,
        settings={"prompt": "p"},
        parent_id=None,
        manage_token_hash="h",
        max_attempts=3,
        queue_limit=100,
    )
    return job.id, events


async def claim(store: AsyncStore) -> list[Event]:
    claimed = await store.write(SqlStore.claim, "w1", 30_000)
    assert claimed is not None
    return claimed[1]


def test_concurrent_askers_share_one_computation(store: AsyncStore) -> None:
    async def main() -> None:
        polls = PollAnswers(store, poll_after_ms=1000, ttl_s=60)
        job_id, _ = await new_job(store)
        answers = await asyncio.gather(*(polls.answer(job_id, 0) for _ in range(50)))
        assert polls.computed == 1
        assert len({a.body for a in answers}) == 1 and len({a.etag for a in answers}) == 1
        body = json.loads(answers[0].body)
        assert [e["type"] for e in body["events"]] == ["queued"]
        assert body["last_seq"] == 1 and body["status"] == "queued"
        assert body["terminal"] is False and body["poll_after_ms"] == 1000
        assert body["events"][0] == answers[0].events[0].to_dict()
        await polls.answer(job_id, 1)  # another cursor is another answer
        assert polls.computed == 2

    asyncio.run(main())


def test_a_publish_invalidates_that_jobs_answers(store: AsyncStore) -> None:
    async def main() -> None:
        polls = PollAnswers(store, poll_after_ms=1000, ttl_s=60)
        job_id, _ = await new_job(store)
        first = await polls.answer(job_id, 1)
        assert first.empty
        events = await claim(store)
        assert (await polls.answer(job_id, 1)).empty  # not published yet: still shared
        polls.published(events)
        second = await polls.answer(job_id, 1)
        assert [e.type.value for e in second.events] == ["running"]
        assert second.etag != first.etag and polls.computed == 2

    asyncio.run(main())


def test_parked_polls_share_one_wakeup_and_leave_nothing_behind(store: AsyncStore) -> None:
    async def main() -> None:
        polls = PollAnswers(store, poll_after_ms=1000, ttl_s=60)
        job_id, _ = await new_job(store)
        answer = await polls.answer(job_id, 1)
        waiters = [asyncio.create_task(polls.wait_for_change(answer, 30)) for _ in range(20)]
        await asyncio.sleep(0)
        assert len(polls._wake) == 1 and polls._wake[job_id][1] == 20
        polls.published(await claim(store))
        assert await asyncio.gather(*waiters) == [True] * 20
        assert polls._wake == {}
        # A poll that times out leaves no Event behind either.
        answer = await polls.answer(job_id, 2)
        assert await polls.wait_for_change(answer, 0.01) is False
        assert polls._wake == {}

    asyncio.run(main())


def test_woken_polls_answer_after_the_coalescing_window_with_what_came_meanwhile(
    store: AsyncStore,
) -> None:
    async def main() -> None:
        polls = PollAnswers(store, poll_after_ms=1000, ttl_s=60, coalesce_s=1.0)
        job_id, _ = await new_job(store)
        answer = await polls.answer(job_id, 1)
        # Commit everything first, publish later: no store latency inside the windows.
        running = await claim(store)
        job = await store.read(SqlStore.get_job, job_id)
        assert job is not None and job.lease_token is not None
        progress = [
            (
                await store.write(
                    SqlStore.worker_event, job_id, job.lease_token, EventType.PROGRESS, {"step": n}
                )
            )[1]
            for n in (1, 2, 3)
        ]
        waiters = [asyncio.create_task(polls.wait_for_change(answer, 30)) for _ in range(50)]
        await asyncio.sleep(0)
        polls.published(running)  # the window opens: 1 ms per parked poll, 50 ms
        await asyncio.sleep(0)
        assert polls.holding(job_id)
        assert not any(w.done() for w in waiters)  # held for the window, not answered yet
        polls.published(progress[:1])  # inside the window: no second wake-up is armed
        assert await asyncio.gather(*waiters) == [True] * 50
        later = await polls.answer(job_id, 1)
        assert [e.seq for e in later.events][:2] == [2, 3]  # both events in one answer
        assert not polls.holding(job_id)
        # The crowd of the last window (50) still counts while they are between polls...
        polls.published(progress[1:2])
        assert polls.holding(job_id)
        await asyncio.sleep(0.2)  # ...until a window ends with nobody parked
        polls.published(progress[2:])
        assert not polls.holding(job_id)

    asyncio.run(main())


def test_a_publish_during_the_answer_is_not_missed(store: AsyncStore) -> None:
    async def main() -> None:
        polls = PollAnswers(store, poll_after_ms=1000, ttl_s=60)
        job_id, _ = await new_job(store)
        answer = await polls.answer(job_id, 1)
        polls.published(await claim(store))  # before the poll parks
        assert await polls.wait_for_change(answer, 30) is True

    asyncio.run(main())


def test_unknown_job_and_cursor_ahead_are_errors_not_cached(store: AsyncStore) -> None:
    async def main() -> None:
        polls = PollAnswers(store, poll_after_ms=1000, ttl_s=60)
        with pytest.raises(NotFound):
            await polls.answer("nope", 0)
        job_id, _ = await new_job(store)
        with pytest.raises(CursorAhead) as info:
            await polls.answer(job_id, 5)
        assert info.value.last_seq == 1
        with pytest.raises(CursorAhead):
            await polls.answer(job_id, 5)
        assert polls.computed == 3

    asyncio.run(main())
