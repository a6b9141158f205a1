"""The job store: jobs, their event logs and idempotency keys, on SQLAlchemy Core.

Every state change is ONE transaction that bumps ``jobs.last_seq``, inserts the event with
that ``seq`` (so ``seq`` is gapless per job) and updates the job row.  Worker writes are
fenced: they carry the lease token, and a write that matches no row raises ``LeaseLost``.

Methods are synchronous; ``safelight.store.runner.AsyncStore`` runs them off the event loop
(one writer thread: SQLite is a single-writer database, ``BEGIN IMMEDIATE`` for writes).
Lease expiry is judged by the database clock (``_now``), never by a worker's clock.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from safelight.errors import (
    DatabaseUnavailable,
    IdempotencyInFlight,
    LeaseLost,
    NotFound,
    StorageUnavailable,
    Unavailable,
    ValidationFailed,
)
from safelight.models import Event, JobRecord, dumps
from safelight.store import webhooks as webhook_rows
from safelight.store.migrate import SchemaPolicy, prepare
from safelight.store.schema import CLEAR_LEASE, idempotency_keys, job_events, jobs
from safelight.types import EventType, JobStatus, WebhookEvent, check_transition

EtaFn = Callable[[int], float | None]
# PostgreSQL: every appended event is announced on this channel as "job_id:seq:type" (no
# data: the table is the source of truth), delivered at commit, to every node's listener;
# the type lets a node skip reading events it has no use for.
NOTIFY_CHANNEL = "safelight_events"
# Queue moves announced by `position` events: every one in the first places, then only
# at multiples of the stride (SqlStore._shift_queue).
POSITION_EVERY_UNTIL = 20
POSITION_STRIDE = 10
# pg_advisory_xact_lock key for queue renumbering (see SqlStore._queue_lock).
QUEUE_LOCK_KEY = 0x5AFE_0001
ACTIVE = (JobStatus.RUNNING.value, JobStatus.UPLOADING.value)


def _no_eta(position: int) -> float | None:
    return None


class SqlStore:
    """One schema on SQLite (embedded) or PostgreSQL (scale-out)."""

    def __init__(
        self,
        url: str,
        schema: SchemaPolicy = SchemaPolicy.UPGRADE,
        *,
        idle_tx_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # Embedded lease clock (see _lease_now): the wall clock read once, then monotonic.
        self._anchor_wall_ms = int(time.time() * 1000)
        self._anchor_mono = time.monotonic()
        if self.is_sqlite:
            self._writer = _sqlite_engine(url, immediate=True)
            self._reader = _sqlite_engine(url, immediate=False)
        else:  # pragma: no cover - scale-out engine, see ARCHITECTURE.md
            # pre_ping: a pooled connection that died with a database restart is replaced
            # on checkout instead of failing the next statement.  connect_timeout bounds a
            # connect to an unreachable server (the caller then backs off and retries).
            # idle_in_transaction_session_timeout: a process frozen mid-transaction
            # (SIGSTOP, a VM pause) would hold its row locks - and so block every reaper -
            # for as long as it stays frozen; the server ends such a session instead
            # (found by chaos scenario P4).  Our transactions never wait on the client.
            idle_ms = max(1, int(idle_tx_timeout_s * 1000))
            self._writer = create_engine(
                url,
                pool_pre_ping=True,
                connect_args={
                    "connect_timeout": 5,
                    "options": f"-c idle_in_transaction_session_timeout={idle_ms}",
                },
            )
            self._reader = self._writer
        try:
            with self._tx() as conn:
                self.schema_found = prepare(conn, schema)
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_sqlite_file(cls, path: Path) -> SqlStore:
        return cls(f"sqlite:///{path}")

    def close(self) -> None:
        self._writer.dispose()
        self._reader.dispose()

    # -- plumbing ---------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self._writer.begin() as conn:
                yield conn
        except DBAPIError as exc:
            raise _translate(exc) from exc
        except PoolTimeout as exc:
            raise DatabaseUnavailable("no database connection became free in time") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._reader.connect() as conn:
                yield conn
        except DBAPIError as exc:
            raise _translate(exc) from exc
        except PoolTimeout as exc:
            raise DatabaseUnavailable("no database connection became free in time") from exc

    def _now(self, conn: Connection) -> int:
        if self.is_sqlite:
            expr = text("SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)")
        else:  # pragma: no cover
            expr = text("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")
        return int(conn.execute(expr).scalar_one())

    def _lease_now(self, conn: Connection) -> int:
        """The clock leases are set and judged by.  PostgreSQL: the database clock, which
        every node shares.  SQLite (embedded): one process owns the data directory, so its
        monotonic clock, anchored to the wall clock once - a wall-clock step (NTP) while
        jobs run must not make live leases look expired (R12: a +1 h step requeued every
        running job as ``worker_lost``).  Start-up recovery reaps every active job, so
        leases written by an earlier process never need comparing."""
        if self.is_sqlite:
            return self._anchor_wall_ms + int((time.monotonic() - self._anchor_mono) * 1000)
        return self._now(conn)

    def now_ms(self) -> int:
        with self._read() as conn:
            return self._now(conn)

    def _append(
        self,
        conn: Connection,
        job_id: str,
        type_: EventType,
        attempt: int,
        data: dict[str, Any],
        now: int,
        /,
        *,
        fence: str | None = None,
        **updates: Any,
    ) -> Event:
        """Bump last_seq, apply ``updates`` and insert the event, in the caller's tx."""
        where = jobs.c.id == job_id
        if fence is not None:
            where = where & (jobs.c.lease_token == fence) & jobs.c.status.in_(ACTIVE)
        values = {k: _encode(k, v) for k, v in updates.items()}
        row = conn.execute(
            jobs.update()
            .where(where)
            .values(last_seq=jobs.c.last_seq + 1, updated_ms=now, **values)
            .returning(jobs.c.last_seq)
        ).first()
        if row is None:
            if fence is not None:
                raise LeaseLost(f"job {job_id}: lease token no longer valid")
            raise NotFound(f"no job {job_id}")
        seq = int(row[0])
        conn.execute(
            job_events.insert().values(
                job_id=job_id,
                seq=seq,
                type=type_.value,
                attempt=attempt,
                ts_ms=now,
                data=dumps(data),
            )
        )
        if not self.is_sqlite:
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": NOTIFY_CHANNEL, "payload": f"{job_id}:{seq}:{type_.value}"},
            )
        event = Event(job_id, seq, type_, attempt, now, data)
        # The webhook delivery commits with its event, or neither does (at-least-once).
        event.webhook_queued = webhook_rows.enqueue(conn, event)
        return event

    def _queue_lock(self, conn: Connection) -> None:
        """Serialise the transactions that renumber the queue (claim, cancel of a queued
        job) on PostgreSQL.  Each writes a ``position`` event to every job behind the one
        that left, so two of them at once lock the same rows in different orders and
        deadlock (found by chaos scenario P1: 4 workers, 200 queued jobs).  SQLite has one
        writer already.  Taken first, before any row lock, so it cannot join a cycle."""
        if not self.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": QUEUE_LOCK_KEY})

    def _locked(self, conn: Connection, job_id: str) -> JobRecord:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return _record(row._mapping)

    def _queued_ids(self, conn: Connection) -> list[str]:
        rows = conn.execute(
            select(jobs.c.id)
            .where(jobs.c.status == JobStatus.QUEUED.value)
            .order_by(jobs.c.enqueued_ms, jobs.c.id)
        )
        return [r[0] for r in rows]

    def _shift_queue(
        self, conn: Connection, now: int, removed_index: int, eta: EtaFn
    ) -> list[Event]:
        """A job left the queue at ``removed_index``: everyone behind it moves up.

        Announced with a ``position`` event to each job now in the first
        ``POSITION_EVERY_UNTIL`` places, and further back only at every
        ``POSITION_STRIDE``-th place: a deep queue would otherwise cost one event (and one
        NOTIFY read by every node) per queued job per claim, O(n^2) for n queued jobs.
        The job object's ``queue.position`` is always exact."""
        ids = self._queued_ids(conn)
        positions = {
            ids[index]: index + 1
            for index in range(removed_index, len(ids))
            if index + 1 <= POSITION_EVERY_UNTIL or (index + 1) % POSITION_STRIDE == 0
        }
        if not positions:
            return []
        # One statement each for the rows, the events and the notifications (this runs
        # inside every claim, under the queue lock: its length is the claim rate).
        rows = conn.execute(
            jobs.update()
            .where(jobs.c.id.in_(list(positions)))
            .values(last_seq=jobs.c.last_seq + 1, updated_ms=now)
            .returning(jobs.c.id, jobs.c.last_seq, jobs.c.attempt)
        ).all()
        out = sorted(
            (
                Event(
                    job_id,
                    int(seq),
                    EventType.POSITION,
                    int(attempt),
                    now,
                    {"position": positions[job_id], "eta_s": eta(positions[job_id])},
                )
                for job_id, seq, attempt in rows
            ),
            key=lambda e: positions[e.job_id],
        )
        conn.execute(
            job_events.insert(),
            [
                {
                    "job_id": e.job_id,
                    "seq": e.seq,
                    "type": e.type.value,
                    "attempt": e.attempt,
                    "ts_ms": now,
                    "data": dumps(e.data),
                }
                for e in out
            ],
        )
        if not self.is_sqlite:
            conn.execute(
                text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) p"),
                {
                    "channel": NOTIFY_CHANNEL,
                    "payloads": [f"{e.job_id}:{e.seq}:{e.type.value}" for e in out],
                },
            )
        return out

    # -- reads ------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            return None if row is None else _record(row._mapping)

    def read_events(self, job_id: str, after: int, limit: int = 1000) -> list[Event]:
        with self._read() as conn:
            rows = conn.execute(
                select(job_events)
                .where((job_events.c.job_id == job_id) & (job_events.c.seq > after))
                .order_by(job_events.c.seq)
                .limit(limit)
            )
            return [event_of(r) for r in rows]

    def queue_position(self, job_id: str) -> int | None:
        with self._read() as conn:
            ids = self._queued_ids(conn)
        try:
            return ids.index(job_id) + 1
        except ValueError:
            return None

    def count_by_status(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
            return {str(r[0]): int(r[1]) for r in rows}

    # -- client-side changes ----------------------------------------------------------

    def create_job(
        self,
        *,
        settings: dict[str, Any],
        parent_id: str | None,
        manage_token_hash: str,
        max_attempts: int,
        queue_limit: int,
        eta: EtaFn = _no_eta,
        webhook: tuple[str, list[WebhookEvent]] | None = None,
    ) -> tuple[JobRecord, list[Event]]:
        job_id = new_id()
        with self._tx() as conn:
            now = self._now(conn)
            queued = conn.execute(
                select(func.count()).where(jobs.c.status == JobStatus.QUEUED.value)
            ).scalar_one()
            if int(queued) >= queue_limit:
                raise Unavailable(
                    f"the queue is full ({queue_limit} jobs waiting); try again shortly",
                    code="queue_full",
                    retry_after=10,
                )
            if parent_id is not None:
                exists = conn.execute(select(jobs.c.id).where(jobs.c.id == parent_id)).first()
                if exists is None:
                    raise ValidationFailed(
                        [{"field": "parent_id", "message": "no job with this id exists"}]
                    )
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    status=JobStatus.QUEUED.value,
                    attempt=1,
                    max_attempts=max_attempts,
                    settings=dumps(settings),
                    parent_id=parent_id,
                    manage_token_hash=manage_token_hash,
                    cancel_requested=False,
                    last_seq=0,
                    images="[]",
                    enqueued_ms=now,
                    created_ms=now,
                    updated_ms=now,
                )
            )
            if webhook is not None:
                webhook_rows.add_webhook(conn, job_id, webhook[0], webhook[1], now)
            position = int(queued) + 1
            ev = self._append(
                conn,
                job_id,
                EventType.QUEUED,
                1,
                {"position": position, "eta_s": eta(position)},
                now,
            )
            return self._locked(conn, job_id), [ev]

    def request_cancel(self, job_id: str, eta: EtaFn = _no_eta) -> tuple[JobRecord, list[Event]]:
        """queued -> cancelled at once; running/uploading -> cancel_requested (+ event);
        cancelled -> unchanged.  Completed/failed are left to the caller to refuse."""
        with self._tx() as conn:
            self._queue_lock(conn)
            job = self._locked(conn, job_id)
            now = self._now(conn)
            events: list[Event] = []
            if job.status is JobStatus.QUEUED:
                index = self._queued_ids(conn).index(job_id)
                events.append(self._cancelled(conn, job, now, step=None))
                events += self._shift_queue(conn, now, index, eta)
            elif job.status.active and not job.cancel_requested:
                events.append(
                    self._append(
                        conn,
                        job_id,
                        EventType.CANCEL_REQUESTED,
                        job.attempt,
                        {},
                        now,
                        cancel_requested=True,
                    )
                )
            return self._locked(conn, job_id), events

    def retry(self, job_id: str, eta: EtaFn = _no_eta) -> tuple[JobRecord, list[Event]]:
        """failed (retryable, attempts left) -> queued with attempt + 1.  The caller checks
        the preconditions first for a precise error; they are re-checked here under the
        row lock so that two concurrent retries give exactly one new attempt."""
        from safelight.errors import Conflict, MaxAttemptsReached

        with self._tx() as conn:
            job = self._locked(conn, job_id)
            if job.status is not JobStatus.FAILED:
                raise Conflict(f"the job is {job.status}, not failed", code="not_failed")
            if not (job.error or {}).get("retryable", False):
                raise Conflict("this failure cannot be retried", code="not_retryable")
            if job.attempt >= job.max_attempts:
                raise MaxAttemptsReached(
                    f"attempt {job.attempt} of {job.max_attempts} was the last one"
                )
            now = self._now(conn)
            attempt = job.attempt + 1
            events = [
                self._append(
                    conn,
                    job_id,
                    EventType.RETRY,
                    attempt,
                    {"attempt": attempt, "max_attempts": job.max_attempts, "reason": "manual"},
                    now,
                )
            ]
            events.append(self._requeue(conn, job, attempt, now, eta))
            return self._locked(conn, job_id), events

    def _cancelled(self, conn: Connection, job: JobRecord, now: int, *, step: int | None) -> Event:
        """End ``job`` as cancelled by its user (from the queue, or reaped mid-attempt)."""
        check_transition(job.status, JobStatus.CANCELLED)
        return self._append(
            conn,
            job.id,
            EventType.CANCELLED,
            job.attempt,
            {"reason": "user", "step": step},
            now,
            status=JobStatus.CANCELLED.value,
            finished_ms=now,
            **CLEAR_LEASE,
        )

    def _requeue(
        self,
        conn: Connection,
        job: JobRecord,
        attempt: int,
        now: int,
        eta: EtaFn,
        **why: Any,
    ) -> Event:
        check_transition(job.status, JobStatus.QUEUED)
        position = len(self._queued_ids(conn)) + 1
        return self._append(
            conn,
            job.id,
            EventType.QUEUED,
            attempt,
            {"position": position, "eta_s": eta(position), **why},
            now,
            status=JobStatus.QUEUED.value,
            attempt=attempt,
            error=None,
            progress=None,
            images=[],
            cancel_requested=False,
            enqueued_ms=now,
            finished_ms=None,
            started_ms=None,
            last_progress_ms=None,
            **CLEAR_LEASE,
        )

    # -- worker-side changes (fenced) -------------------------------------------------

    def claim(
        self, worker: str, lease_ms: int, eta: EtaFn = _no_eta
    ) -> tuple[JobRecord, list[Event]] | None:
        with self._tx() as conn:
            if self.is_sqlite:
                row = conn.execute(
                    select(jobs.c.id)
                    .where(jobs.c.status == JobStatus.QUEUED.value)
                    .order_by(jobs.c.enqueued_ms, jobs.c.id)
                    .limit(1)
                ).first()
            else:  # pragma: no cover
                self._queue_lock(conn)
                row = conn.execute(
                    select(jobs.c.id)
                    .where(jobs.c.status == JobStatus.QUEUED.value)
                    .order_by(jobs.c.enqueued_ms, jobs.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
            if row is None:
                return None
            job = self._locked(conn, row[0])
            check_transition(job.status, JobStatus.RUNNING)
            now = self._now(conn)
            token = secrets.token_hex(16)
            events = [
                self._append(
                    conn,
                    job.id,
                    EventType.RUNNING,
                    job.attempt,
                    {"worker": worker},
                    now,
                    status=JobStatus.RUNNING.value,
                    lease_owner=worker,
                    lease_token=token,
                    lease_expires_ms=self._lease_now(conn) + lease_ms,
                    started_ms=now,
                    last_progress_ms=now,
                )
            ]
            events += self._shift_queue(conn, now, 0, eta)
            return self._locked(conn, job.id), events

    def heartbeat(self, job_id: str, token: str, lease_ms: int) -> bool:
        """Renew the lease; returns ``cancel_requested``.  Raises ``LeaseLost``."""
        with self._tx() as conn:
            row = conn.execute(
                jobs.update()
                .where(
                    (jobs.c.id == job_id)
                    & (jobs.c.lease_token == token)
                    & jobs.c.status.in_(ACTIVE)
                )
                .values(lease_expires_ms=self._lease_now(conn) + lease_ms)
                .returning(jobs.c.cancel_requested)
            ).first()
            if row is None:
                raise LeaseLost(f"job {job_id}: lease token no longer valid")
            return bool(row[0])

    def worker_event(
        self,
        job_id: str,
        token: str,
        type_: EventType,
        data: dict[str, Any],
        /,
        *,
        status: JobStatus | None = None,
        lease_ms: int | None = None,
        **updates: Any,
    ) -> tuple[JobRecord, Event]:
        """A fenced event from the worker holding ``token``; ``status`` moves the job.

        With ``lease_ms``, a non-terminal event also renews the lease, as a heartbeat
        would: a worker whose writes are going through is alive, even when its heartbeat
        waits behind them in a busy writer queue (R9: leases lapsed under a reconnect storm
        while progress kept committing).

        The end of an attempt and a cancel meet here, under the row lock: when a cancel
        was accepted (202) before this transaction, a terminal write becomes ``cancelled``
        whatever the worker was about to write - so a 202 always ends ``cancelled``, and a
        cancel that arrives after this commit finds the job terminal (409)."""
        with self._tx() as conn:
            job = self._locked(conn, job_id)
            if job.lease_token != token or not job.status.active:
                raise LeaseLost(f"job {job_id}: lease token no longer valid")
            now = self._now(conn)
            if status is not None and status.terminal and job.cancel_requested:
                # The worker's own step when it is the worker's cancel; else the last
                # committed one (0 before the first progress was written).
                step = data.get("step") if type_ is EventType.CANCELLED else None
                if step is None:
                    step = (job.progress or {}).get("step") or 0
                type_, status = EventType.CANCELLED, JobStatus.CANCELLED
                data = {"reason": "user", "step": step}
                updates = {}
            if status is job.status:
                # A retried write whose first try committed (the connection dropped
                # before the answer): the job is already there.
                status = None
            if status is not None:
                check_transition(job.status, status)
                updates["status"] = status.value
                if status.terminal:
                    updates.update(finished_ms=now, **CLEAR_LEASE)
            if type_ in (EventType.PROGRESS, EventType.PREVIEW):
                updates.setdefault("last_progress_ms", now)
            if lease_ms is not None and not (status is not None and status.terminal):
                updates["lease_expires_ms"] = self._lease_now(conn) + lease_ms
            ev = self._append(conn, job_id, type_, job.attempt, data, now, fence=token, **updates)
            return self._locked(conn, job_id), ev

    def release(
        self, job_id: str, token: str, worker: str, eta: EtaFn = _no_eta
    ) -> tuple[JobRecord, list[Event]]:
        """Graceful hand-back by a worker that is shutting down: the job goes straight
        back to the queue at the SAME attempt (the attempt is not counted), logged as a
        ``queued`` event with ``reason: handed_back``.  A pending cancel ends it instead."""
        with self._tx() as conn:
            job = self._locked(conn, job_id)
            if job.lease_token != token or not job.status.active:
                raise LeaseLost(f"job {job_id}: lease token no longer valid")
            now = self._now(conn)
            step = (job.progress or {}).get("step")
            if job.cancel_requested:
                event = self._cancelled(conn, job, now, step=step)
                return self._locked(conn, job_id), [event]
            event = self._requeue(
                conn, job, job.attempt, now, eta, reason="handed_back", worker=worker, step=step
            )
            return self._locked(conn, job_id), [event]

    def reap(self, *, everything: bool = False, eta: EtaFn = _no_eta) -> list[Event]:
        """Jobs whose lease expired (or, at embedded start-up, every active job: the only
        process that could hold them is gone) are requeued with a ``retry`` event, or
        cancelled when a cancel was pending, or failed at ``max_attempts``."""
        events: list[Event] = []
        with self._tx() as conn:
            now = self._now(conn)
            lease_now = self._lease_now(conn)
            query = select(jobs.c.id).where(jobs.c.status.in_(ACTIVE))
            if not everything:
                query = query.where(jobs.c.lease_expires_ms < lease_now)
            for (job_id,) in conn.execute(query.order_by(jobs.c.enqueued_ms)).all():
                job = self._locked(conn, job_id)
                expired = job.lease_expires_ms is None or job.lease_expires_ms < lease_now
                if not job.status.active or not (everything or expired):
                    continue  # another reaper (or the worker) got there first
                if job.cancel_requested:
                    step = (job.progress or {}).get("step")
                    events.append(self._cancelled(conn, job, now, step=step))
                elif job.attempt < job.max_attempts:
                    attempt = job.attempt + 1
                    events.append(
                        self._append(
                            conn,
                            job_id,
                            EventType.RETRY,
                            attempt,
                            {
                                "attempt": attempt,
                                "max_attempts": job.max_attempts,
                                "reason": "worker_lost",
                            },
                            now,
                        )
                    )
                    events.append(self._requeue(conn, job, attempt, now, eta))
                else:
                    error = worker_lost_error(job.attempt, job.max_attempts)
                    events.append(
                        self._append(
                            conn,
                            job_id,
                            EventType.FAILED,
                            job.attempt,
                            {"error": error},
                            now,
                            status=JobStatus.FAILED.value,
                            error=error,
                            finished_ms=now,
                            **CLEAR_LEASE,
                        )
                    )
        return events

    # -- idempotency keys -------------------------------------------------------------

    def idem_begin(self, key: str, body_hash: str, ttl_ms: int) -> tuple[int, str] | None:
        """Reserve ``key``.  Returns the stored (status, body) for a replay, None when the
        caller should go ahead; raises on mismatch (422) or in-flight (409)."""
        with self._tx() as conn:
            now = self._now(conn)
            row = conn.execute(
                select(idempotency_keys).where(idempotency_keys.c.key == key)
            ).first()
            if row is not None and row.created_ms + ttl_ms < now:
                conn.execute(idempotency_keys.delete().where(idempotency_keys.c.key == key))
                row = None
            if row is None:
                try:
                    conn.execute(
                        idempotency_keys.insert().values(
                            key=key, body_hash=body_hash, state="in_flight", created_ms=now
                        )
                    )
                except IntegrityError as exc:  # pragma: no cover - single writer
                    raise IdempotencyInFlight() from exc
                return None
            if row.body_hash != body_hash:
                raise ValidationFailed(
                    [
                        {
                            "field": "Idempotency-Key",
                            "message": "this key was used with a different request body",
                        }
                    ],
                    "Idempotency-Key reused with a different body",
                )
            if row.state != "done":
                raise IdempotencyInFlight()
            return int(row.status_code), str(row.response)

    def idem_finish(self, key: str, status_code: int, body: str) -> None:
        with self._tx() as conn:
            conn.execute(
                idempotency_keys.update()
                .where(idempotency_keys.c.key == key)
                .values(state="done", status_code=status_code, response=body)
            )

    def idem_release(self, key: str) -> None:
        with self._tx() as conn:
            conn.execute(idempotency_keys.delete().where(idempotency_keys.c.key == key))


def worker_lost_error(attempt: int, max_attempts: int) -> dict[str, Any]:
    return {
        "type": "internal",
        "code": "worker_lost",
        "message": (
            f"The worker running this job stopped unexpectedly on each of its "
            f"{max_attempts} attempts."
        ),
        "retryable": True,
        "next_steps": ["restart", "contact_support"],
        "detail": {"attempt": attempt, "max_attempts": max_attempts},
    }


def new_id() -> str:
    """128 random bits, URL-safe (API.md: opaque, >= 128 bits), never starting with ``-``
    or ``_``: an id like ``-kr4q...`` reads as an option to ``safelight retry ID`` and to
    most command lines.  A redraw keeps the id uniform over the ids that remain."""
    while True:
        job_id = secrets.token_urlsafe(16)
        if job_id[0].isalnum():
            return job_id


_JSON_COLUMNS = {"settings", "progress", "preview", "images", "error"}


def _encode(key: str, value: Any) -> Any:
    if key in _JSON_COLUMNS and value is not None:
        return dumps(value)
    return value


def event_of(r: Any) -> Event:
    """A job_events row as an Event."""
    return Event(
        r.job_id, int(r.seq), EventType(r.type), int(r.attempt), int(r.ts_ms), json.loads(r.data)
    )


def _record(m: Any) -> JobRecord:
    def load(v: str | None) -> Any:
        return None if v is None else json.loads(v)

    return JobRecord(
        id=m["id"],
        status=JobStatus(m["status"]),
        attempt=int(m["attempt"]),
        max_attempts=int(m["max_attempts"]),
        settings=json.loads(m["settings"]),
        parent_id=m["parent_id"],
        manage_token_hash=m["manage_token_hash"],
        cancel_requested=bool(m["cancel_requested"]),
        last_seq=int(m["last_seq"]),
        progress=load(m["progress"]),
        preview=load(m["preview"]),
        images=load(m["images"]) or [],
        error=load(m["error"]),
        lease_owner=m["lease_owner"],
        lease_token=m["lease_token"],
        lease_expires_ms=m["lease_expires_ms"],
        enqueued_ms=int(m["enqueued_ms"]),
        created_ms=int(m["created_ms"]),
        updated_ms=int(m["updated_ms"]),
        started_ms=m["started_ms"],
        finished_ms=m["finished_ms"],
        last_progress_ms=m["last_progress_ms"],
    )


def _translate(exc: DBAPIError) -> Exception:
    message = str(exc.orig).lower()
    storage_words = (
        "disk is full",
        "disk i/o",
        "readonly",
        "read-only",
        "unable to open",
        "no space",
    )
    if any(w in message for w in storage_words):
        return StorageUnavailable(f"storage error: {exc.orig}", retry_after=30)
    if "locked" in message or "busy" in message:
        return Unavailable("the database is busy; try again", retry_after=1)
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        # Refused, reset, "terminating connection", server restarting: transient.  Every
        # background loop backs off on it; requests answer 503 with Retry-After.
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        return DatabaseUnavailable(f"the database is unreachable: {first_line}", retry_after=2)
    return exc


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(
        url, pool_size=8, connect_args={"check_same_thread": False, "timeout": 10}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a 201 means the job row is on disk (research/reliability-anchors.md #4).
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
