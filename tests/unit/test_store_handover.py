"""Store contract, continued (SQLite and PostgreSQL): where an attempt's end meets a
cancel, graceful hand-back, retried writes, and connection errors at the store boundary."""

from __future__ import annotations

import contextlib

import pytest

from safelight.errors import DatabaseUnavailable, LeaseLost
from safelight.store.sql import SqlStore
from safelight.types import EventType, JobStatus
from tests.pgdb import temp_database
from tests.pgproxy import PgProxy, pg_proxy
from tests.unit.test_store_contract import assert_gapless, claim, create, store

__all__ = ["pg_proxy", "store"]  # fixtures


def claim_new(store: SqlStore) -> tuple[str, str]:
    job_id = create(store)
    claimed_id, token = claim(store)
    assert claimed_id == job_id
    return job_id, token


def upload(store: SqlStore, job_id: str, token: str) -> None:
    store.worker_event(job_id, token, EventType.PROGRESS, {"step": 3}, progress={"step": 3})
    store.worker_event(job_id, token, EventType.UPLOADING, {}, status=JobStatus.UPLOADING)


@pytest.mark.parametrize("end", [JobStatus.COMPLETED, JobStatus.FAILED])
def test_regression_cancel_accepted_during_upload_ends_cancelled(
    store: SqlStore, end: JobStatus
) -> None:
    """issue 12: a 202 cancel during the last step or the upload could still end
    `completed`.  The terminal write and the cancel meet under the row lock."""
    job_id, token = claim_new(store)
    upload(store, job_id, token)
    job, events = store.request_cancel(job_id)
    assert job.status is JobStatus.UPLOADING and job.cancel_requested  # the API's 202
    kind = EventType.COMPLETED if end is JobStatus.COMPLETED else EventType.FAILED
    record, event = store.worker_event(
        job_id, token, kind, {"images": []}, status=end, images=[{"url": "x"}]
    )
    assert record.status is JobStatus.CANCELLED and record.images == []
    assert event.type is EventType.CANCELLED
    assert event.data == {"reason": "user", "step": 3}
    events = assert_gapless(store, job_id)
    assert [e.type for e in events if e.type.terminal] == [EventType.CANCELLED]


def test_a_cancel_after_the_completed_commit_finds_it_completed(store: SqlStore) -> None:
    job_id, token = claim_new(store)
    upload(store, job_id, token)
    store.worker_event(job_id, token, EventType.COMPLETED, {}, status=JobStatus.COMPLETED)
    job, events = store.request_cancel(job_id)
    assert job.status is JobStatus.COMPLETED and not events  # the API answers 409


def test_hand_back_requeues_at_the_same_attempt(store: SqlStore) -> None:
    job_id, token = claim_new(store)
    store.worker_event(job_id, token, EventType.PROGRESS, {"step": 7}, progress={"step": 7})
    job, events = store.release(job_id, token, "w1-1")
    assert job.status is JobStatus.QUEUED and job.attempt == 1 and job.lease_token is None
    assert [e.type for e in events] == [EventType.QUEUED]
    assert events[0].data["reason"] == "handed_back"
    assert events[0].data["worker"] == "w1-1" and events[0].data["step"] == 7
    with pytest.raises(LeaseLost):  # the old token is dead
        store.worker_event(job_id, token, EventType.PROGRESS, {"step": 8})
    again = store.claim("w2-1", 60_000)
    assert again is not None and again[0].id == job_id and again[0].attempt == 1
    assert_gapless(store, job_id)


def test_hand_back_with_a_cancel_pending_cancels(store: SqlStore) -> None:
    job_id, token = claim_new(store)
    store.request_cancel(job_id)
    job, events = store.release(job_id, token, "w1-1")
    assert job.status is JobStatus.CANCELLED
    assert [e.type for e in events] == [EventType.CANCELLED]


def test_a_retried_status_write_is_idempotent(store: SqlStore) -> None:
    """A write whose commit landed but whose answer was lost is retried by the worker."""
    job_id, token = claim_new(store)
    upload(store, job_id, token)
    job, _ = store.worker_event(job_id, token, EventType.UPLOADING, {}, status=JobStatus.UPLOADING)
    assert job.status is JobStatus.UPLOADING
    assert_gapless(store, job_id)


@pytest.mark.postgres
def test_connection_errors_become_database_unavailable_and_recover(pg_proxy: PgProxy) -> None:
    with temp_database() as name:
        s = SqlStore(pg_proxy.url(name))
        try:
            job_id = create(s)
            pg_proxy.cut()
            with pytest.raises(DatabaseUnavailable):
                s.get_job(job_id)
            with pytest.raises(DatabaseUnavailable):
                s.claim("w1", 1000)
            pg_proxy.restore()
            job = s.get_job(job_id)  # the pool replaced its dead connections
            assert job is not None and job.status is JobStatus.QUEUED
        finally:
            s.close()


@pytest.mark.postgres
def test_regression_a_frozen_transaction_does_not_block_the_reaper() -> None:
    """Chaos P4: a worker SIGSTOPped inside a transaction held the job's row lock, and every
    reaper waited on it for as long as the process stayed stopped."""
    from sqlalchemy import text

    with temp_database() as name:
        s = SqlStore(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", idle_tx_timeout_s=0.5)
        try:
            job_id = create(s)
            claimed = s.claim("w1", 1)  # a 1 ms lease: expired at once
            assert claimed is not None
            frozen = s._writer.connect()
            frozen.begin()
            frozen.execute(text("SELECT 1 FROM jobs WHERE id = :j FOR UPDATE"), {"j": job_id})
            # ... and the "process" stops here, transaction open.
            events = s.reap()  # must not wait forever
            assert [e.type for e in events] == [EventType.RETRY, EventType.QUEUED]
            with contextlib.suppress(Exception):
                frozen.close()
        finally:
            s.close()
