"""The store contract, run against every store engine.

Each engine is a fixture parameter (uvicorn-style), so a new engine runs the whole suite by
adding one factory.  PostgreSQL tests create and drop their own database on the local server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from safelight.errors import (
    Conflict,
    IdempotencyInFlight,
    LeaseLost,
    MaxAttemptsReached,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from safelight.models import Event
from safelight.store.sql import SqlStore
from safelight.types import EventType, JobStatus

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        s = SqlStore.for_sqlite_file(tmp_path / "test.db")
        yield s
        s.close()
        return
    from sqlalchemy import create_engine, text

    name = f"safelight_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    s = SqlStore(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        yield s
    finally:
        s.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def create(store: SqlStore, limit: int = 100, **kw: object) -> str:
    job, events = store.create_job(
        settings={"prompt": "p", **kw},
        parent_id=None,
        manage_token_hash="h",
        max_attempts=3,
        queue_limit=limit,
    )
    assert [e.type for e in events] == [EventType.QUEUED]
    return job.id


def assert_gapless(store: SqlStore, job_id: str) -> list[Event]:
    events = store.read_events(job_id, 0)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    job = store.get_job(job_id)
    assert job is not None and job.last_seq == len(events)
    return events


def claim(store: SqlStore, lease_ms: int = 60_000) -> tuple[str, str]:
    claimed = store.claim("w1", lease_ms)
    assert claimed is not None
    job, _ = claimed
    assert job.lease_token is not None
    return job.id, job.lease_token


def fail(store: SqlStore, job_id: str, token: str, retryable: bool = True) -> None:
    error = {
        "type": "provider",
        "code": "x",
        "message": "m",
        "retryable": retryable,
        "next_steps": [],
        "detail": {},
    }
    store.worker_event(
        job_id, token, EventType.FAILED, {"error": error}, status=JobStatus.FAILED, error=error
    )


def test_create_logs_queued_as_seq_1_with_position(store: SqlStore) -> None:
    a, b = create(store), create(store)
    assert store.read_events(b, 0)[0].data["position"] == 2
    job = store.get_job(a)
    assert job is not None and job.status is JobStatus.QUEUED and job.attempt == 1
    assert store.queue_position(b) == 2
    assert len(a) >= 22  # 128 random bits, URL-safe


def test_unknown_parent_is_a_validation_error(store: SqlStore) -> None:
    with pytest.raises(ValidationFailed):
        store.create_job(
            settings={}, parent_id="nope", manage_token_hash="h", max_attempts=3, queue_limit=10
        )


def test_full_queue_refuses_and_creates_nothing(store: SqlStore) -> None:
    create(store, limit=2)
    create(store, limit=2)
    with pytest.raises(Unavailable) as info:
        create(store, limit=2)
    assert info.value.code == "queue_full" and info.value.retry_after > 0
    assert store.count_by_status() == {"queued": 2}


def test_claim_is_fifo_and_moves_the_queue_up(store: SqlStore) -> None:
    a, b, c = create(store), create(store), create(store)
    claimed = store.claim("w1", 1000)
    assert claimed is not None
    job, events = claimed
    assert job.id == a and job.status is JobStatus.RUNNING
    moved = {e.job_id: e.data["position"] for e in events if e.type is EventType.POSITION}
    assert moved == {b: 1, c: 2}
    for j in (a, b, c):
        assert_gapless(store, j)


def test_empty_queue_claims_nothing(store: SqlStore) -> None:
    assert store.claim("w1", 1000) is None


def test_worker_writes_are_fenced_by_the_lease_token(store: SqlStore) -> None:
    create(store)
    job_id, token = claim(store)
    store.worker_event(job_id, token, EventType.PROGRESS, {"step": 1})
    with pytest.raises(LeaseLost):
        store.worker_event(job_id, "stale", EventType.PROGRESS, {"step": 2})
    with pytest.raises(LeaseLost):
        store.heartbeat(job_id, "stale", 1000)
    assert store.heartbeat(job_id, token, 1000) is False
    assert [e.type for e in assert_gapless(store, job_id)] == [
        EventType.QUEUED,
        EventType.RUNNING,
        EventType.PROGRESS,
    ]


def test_a_reaped_worker_can_change_nothing(store: SqlStore) -> None:
    create(store)
    job_id, token = claim(store, lease_ms=-1)  # already expired
    events = store.reap()
    assert [e.type for e in events] == [EventType.RETRY, EventType.QUEUED]
    assert events[0].data == {"attempt": 2, "max_attempts": 3, "reason": "worker_lost"}
    with pytest.raises(LeaseLost):
        store.worker_event(job_id, token, EventType.COMPLETED, {}, status=JobStatus.COMPLETED)
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.QUEUED and job.attempt == 2


def test_reap_leaves_live_leases_alone(store: SqlStore) -> None:
    create(store)
    claim(store, lease_ms=60_000)
    assert store.reap() == []


def test_a_progress_write_with_lease_ms_renews_the_lease(store: SqlStore) -> None:
    """Regression (R9): under a reconnect storm heartbeats waited behind progress writes
    in the writer queue and leases lapsed although the worker kept committing."""
    create(store)
    job_id, token = claim(store, lease_ms=-1)  # would be reaped now...
    store.worker_event(job_id, token, EventType.PROGRESS, {"step": 1}, lease_ms=60_000)
    assert store.reap() == []  # ...but the fenced write renewed it
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.RUNNING and job.attempt == 1
    # A terminal write ends the lease instead of renewing it.
    store.worker_event(
        job_id, token, EventType.FAILED, {"error": {}}, status=JobStatus.FAILED, lease_ms=60_000
    )
    job = store.get_job(job_id)
    assert job is not None and job.lease_expires_ms is None


def test_reap_everything_at_startup_and_fail_at_max_attempts(store: SqlStore) -> None:
    job_id = create(store)
    for attempt in (1, 2):
        claim(store)
        events = store.reap(everything=True)
        assert events[0].data["attempt"] == attempt + 1
    claim(store)
    events = store.reap(everything=True)
    assert [e.type for e in events] == [EventType.FAILED]
    assert events[0].data["error"]["code"] == "worker_lost"
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.attempt == 3
    assert_gapless(store, job_id)


def test_reap_of_a_cancel_requested_job_cancels_it(store: SqlStore) -> None:
    job_id = create(store)
    claim(store, lease_ms=-1)
    store.request_cancel(job_id)
    assert [e.type for e in store.reap()] == [EventType.CANCELLED]


def test_cancel_queued_is_immediate_and_moves_the_queue(store: SqlStore) -> None:
    a, b = create(store), create(store)
    job, events = store.request_cancel(a)
    assert job.status is JobStatus.CANCELLED and job.finished_ms is not None
    assert [(e.job_id, e.type) for e in events] == [
        (a, EventType.CANCELLED),
        (b, EventType.POSITION),
    ]
    # idempotent
    job, events = store.request_cancel(a)
    assert job.status is JobStatus.CANCELLED and events == []


def test_cancel_running_requests_once(store: SqlStore) -> None:
    job_id = create(store)
    _, token = claim(store)
    job, events = store.request_cancel(job_id)
    assert job.cancel_requested and [e.type for e in events] == [EventType.CANCEL_REQUESTED]
    assert store.request_cancel(job_id)[1] == []
    assert store.heartbeat(job_id, token, 1000) is True


def test_retry_rules(store: SqlStore) -> None:
    job_id = create(store)
    with pytest.raises(Conflict) as info:
        store.retry(job_id)
    assert info.value.code == "not_failed"
    for expected_attempt in (2, 3):
        _, token = claim(store)
        fail(store, job_id, token)
        job, events = store.retry(job_id)
        assert job.attempt == expected_attempt and job.status is JobStatus.QUEUED
        assert [e.type for e in events] == [EventType.RETRY, EventType.QUEUED]
        assert job.error is None
    _, token = claim(store)
    fail(store, job_id, token)
    with pytest.raises(MaxAttemptsReached):
        store.retry(job_id)
    assert_gapless(store, job_id)


def test_non_retryable_failure_refuses_retry(store: SqlStore) -> None:
    job_id = create(store)
    _, token = claim(store)
    fail(store, job_id, token, retryable=False)
    with pytest.raises(Conflict) as info:
        store.retry(job_id)
    assert info.value.code == "not_retryable"


def test_concurrent_retries_give_one_attempt(store: SqlStore) -> None:
    job_id = create(store)
    _, token = claim(store)
    fail(store, job_id, token)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        try:
            store.retry(job_id)
            results.append("ok")
        except Conflict as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("not_failed") == 7
    job = store.get_job(job_id)
    assert job is not None and job.attempt == 2


def test_terminal_states_absorb(store: SqlStore) -> None:
    job_id = create(store)
    _, token = claim(store)
    store.worker_event(job_id, token, EventType.UPLOADING, {}, status=JobStatus.UPLOADING)
    store.worker_event(job_id, token, EventType.COMPLETED, {}, status=JobStatus.COMPLETED)
    with pytest.raises(LeaseLost):  # the lease ended with the job
        store.worker_event(job_id, token, EventType.PROGRESS, {})
    assert store.reap(everything=True) == []


def test_read_events_pages_from_a_cursor(store: SqlStore) -> None:
    job_id = create(store)
    _, token = claim(store)
    for step in range(1, 11):
        store.worker_event(job_id, token, EventType.PROGRESS, {"step": step})
    assert [e.seq for e in store.read_events(job_id, 5, limit=3)] == [6, 7, 8]
    assert store.read_events(job_id, 12) == []
    assert store.read_events("nope", 0) == []


def test_idempotency_keys(store: SqlStore) -> None:
    assert store.idem_begin("k", "h1", 60_000) is None
    with pytest.raises(IdempotencyInFlight):
        store.idem_begin("k", "h1", 60_000)
    store.idem_finish("k", 201, '{"id":"x"}')
    assert store.idem_begin("k", "h1", 60_000) == (201, '{"id":"x"}')
    with pytest.raises(ValidationFailed):
        store.idem_begin("k", "h2", 60_000)
    # expired keys start afresh
    assert store.idem_begin("k", "h2", -1) is None
    store.idem_release("k")
    assert store.idem_begin("k", "h3", 60_000) is None


def test_unknown_job(store: SqlStore) -> None:
    assert store.get_job("nope") is None
    with pytest.raises(NotFound):
        store.request_cancel("nope")


def test_concurrent_claims_and_cancels_do_not_deadlock(store: SqlStore) -> None:
    """Regression (found by chaos R12): each claim locks its job, then every queued job
    behind it (position events); two claims at once deadlocked on PostgreSQL and the
    workers backed off as if the store were down."""
    ids = [create(store) for _ in range(40)]
    claimed: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        try:
            while (got := store.claim(f"w{n}", 60_000)) is not None:
                claimed.append(got[0].id)
                if n % 2:  # cancels of queued jobs reorder the queue too
                    queued = [j for j in ids[::-1] if j not in claimed]
                    if queued:
                        store.request_cancel(queued[0])
        except Unavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(claimed) == len(set(claimed))
    for job_id in ids:
        assert_gapless(store, job_id)
