"""Webhook rows: a job's webhook, its deliveries (an outbox) and every attempt.

A delivery is inserted by ``enqueue`` inside the transaction that appends its event
(``SqlStore._append``), so an event that was committed - and so possibly already streamed
or acknowledged - always has its delivery: a crash can only delay it.  Dispatchers on any
node ``claim`` due deliveries under a lease (random token, expiry by the database clock);
``record_attempt`` is fenced by that token, exactly like worker writes to jobs.

Functions take the ``SqlStore`` first so ``AsyncStore.write``/``read`` can run them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select

from safelight.errors import LeaseLost
from safelight.models import Event, dumps, iso_ms
from safelight.store.schema import CLEAR_LEASE, job_webhooks, webhook_attempts, webhook_deliveries
from safelight.types import (
    WEBHOOK_EVENT_OF,
    AttemptOutcome,
    DeliveryStatus,
    WebhookEvent,
)

if TYPE_CHECKING:
    from safelight.store.sql import SqlStore

PENDING = DeliveryStatus.PENDING.value


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: what one sender needs for one attempt."""

    id: str
    job_id: str
    seq: int
    event: str
    url: str
    body: str
    attempts: int
    token: str


# -- inside other transactions ----------------------------------------------------------


def add_webhook(
    conn: Connection, job_id: str, url: str, events: list[WebhookEvent], now: int
) -> None:
    conn.execute(
        job_webhooks.insert().values(
            job_id=job_id, url=url, events=",".join(e.value for e in events), created_ms=now
        )
    )


def enqueue(conn: Connection, event: Event) -> bool:
    """In the event's own transaction: a delivery if the job's webhook wants this event.
    True if one was queued."""
    name = WEBHOOK_EVENT_OF.get(event.type)
    if name is None:
        return False
    row = conn.execute(
        select(job_webhooks.c.url, job_webhooks.c.events).where(
            job_webhooks.c.job_id == event.job_id
        )
    ).first()
    if row is None or name.value not in row.events.split(","):
        return False
    body = {"type": f"job.{name.value}", "timestamp": iso_ms(event.ts_ms), "data": event.to_dict()}
    conn.execute(
        webhook_deliveries.insert().values(
            id=f"msg_{secrets.token_urlsafe(16)}",
            job_id=event.job_id,
            seq=event.seq,
            event=name.value,
            url=row.url,
            body=dumps(body),
            status=PENDING,
            attempts=0,
            next_attempt_ms=event.ts_ms,
            created_ms=event.ts_ms,
        )
    )
    return True


# -- reads ----------------------------------------------------------------------------


def get_webhook(store: SqlStore, job_id: str) -> dict[str, Any] | None:
    with store._read() as conn:
        row = conn.execute(select(job_webhooks).where(job_webhooks.c.job_id == job_id)).first()
    if row is None:
        return None
    return {"url": row.url, "events": row.events.split(",")}


def pending_count(store: SqlStore) -> int:
    with store._read() as conn:
        n = conn.execute(
            select(func.count()).where(webhook_deliveries.c.status == PENDING)
        ).scalar_one()
    return int(n)


def list_deliveries(store: SqlStore, job_id: str, limit: int) -> list[dict[str, Any]]:
    """A job's deliveries in ``seq`` order, each with its attempts (no body, no secret)."""
    with store._read() as conn:
        rows = conn.execute(
            select(webhook_deliveries)
            .where(webhook_deliveries.c.job_id == job_id)
            .order_by(webhook_deliveries.c.seq)
            .limit(limit)
        ).all()
        ids = [r.id for r in rows]
        tries: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            for a in conn.execute(
                select(webhook_attempts)
                .where(webhook_attempts.c.delivery_id.in_(ids))
                .order_by(webhook_attempts.c.delivery_id, webhook_attempts.c.n)
            ):
                tries[a.delivery_id].append(
                    {
                        "n": int(a.n),
                        "at": iso_ms(int(a.started_ms)),
                        "node": a.node,
                        "status_code": a.status_code,
                        "latency_ms": int(a.latency_ms),
                        "outcome": a.outcome,
                        "error": a.error,
                    }
                )
    return [
        {
            "id": r.id,
            "event": r.event,
            "seq": int(r.seq),
            "status": r.status,
            "attempts": tries[r.id],
            "next_attempt_at": iso_ms(int(r.next_attempt_ms)) if r.status == PENDING else None,
            "last_error": r.last_error,
            "created_at": iso_ms(int(r.created_ms)),
            "finished_at": iso_ms(r.finished_ms),
        }
        for r in rows
    ]


def delivery_body(store: SqlStore, delivery_id: str) -> dict[str, Any] | None:
    with store._read() as conn:
        body = conn.execute(
            select(webhook_deliveries.c.body).where(webhook_deliveries.c.id == delivery_id)
        ).scalar()
    return None if body is None else dict(json.loads(body))


# -- dispatcher writes ----------------------------------------------------------------


def _due(now: int) -> Any:
    d = webhook_deliveries.c
    return (
        (d.status == PENDING)
        & (d.next_attempt_ms <= now)
        & (d.lease_expires_ms.is_(None) | (d.lease_expires_ms < now))
    )


def has_due(store: SqlStore) -> bool:
    """A read (off the single writer): is anything due?  Dispatchers wake on every
    progress event of every job, and most jobs have no webhook."""
    with store._read() as conn:
        now = store._now(conn)
        return (
            conn.execute(select(webhook_deliveries.c.id).where(_due(now)).limit(1)).first()
            is not None
        )


def claim(store: SqlStore, node: str, lease_ms: int, limit: int) -> list[Delivery]:
    """Up to ``limit`` due deliveries, each under a fresh lease token.  On PostgreSQL rows
    locked by another node's claim are skipped; a leased row is due only once its lease
    has lapsed (its sender died)."""
    with store._tx() as conn:
        now = store._now(conn)
        d = webhook_deliveries.c
        query = select(d.id).where(_due(now)).order_by(d.next_attempt_ms, d.id).limit(limit)
        if not store.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        out: list[Delivery] = []
        for (delivery_id,) in conn.execute(query).all():
            token = secrets.token_hex(16)
            row = conn.execute(
                webhook_deliveries.update()
                .where(d.id == delivery_id)
                .values(lease_owner=node, lease_token=token, lease_expires_ms=now + lease_ms)
                .returning(d.job_id, d.seq, d.event, d.url, d.body, d.attempts)
            ).one()
            out.append(
                Delivery(
                    delivery_id,
                    row.job_id,
                    int(row.seq),
                    row.event,
                    row.url,
                    row.body,
                    int(row.attempts),
                    token,
                )
            )
        return out


def record_attempt(
    store: SqlStore,
    delivery: Delivery,
    *,
    node: str,
    latency_ms: int,
    status_code: int | None,
    error: str | None,
    delivered: bool,
    blocked: bool,
    retry_in_ms: int,
    retry_for_ms: int,
) -> AttemptOutcome:
    """Log one attempt and move the delivery on; fenced by the claim's token (raises
    ``LeaseLost`` if another sender has the delivery now)."""
    with store._tx() as conn:
        now = store._now(conn)
        d = webhook_deliveries.c
        current = conn.execute(
            select(d.created_ms)
            .where((d.id == delivery.id) & (d.lease_token == delivery.token))
            .with_for_update()  # PostgreSQL: no other claim can slip in before the update
        ).first()
        if current is None:
            raise LeaseLost(f"delivery {delivery.id}: lease token no longer valid")
        if delivered:
            outcome = AttemptOutcome.DELIVERED
        elif blocked:
            outcome = AttemptOutcome.BLOCKED
        elif now + retry_in_ms > int(current.created_ms) + retry_for_ms:
            outcome = AttemptOutcome.GAVE_UP
        else:
            outcome = AttemptOutcome.RETRYING
        values: dict[str, Any] = {"attempts": d.attempts + 1, "last_error": error, **CLEAR_LEASE}
        if outcome is AttemptOutcome.RETRYING:
            values["next_attempt_ms"] = now + retry_in_ms
        else:
            values["finished_ms"] = now
            values["status"] = (
                DeliveryStatus.DELIVERED if delivered else DeliveryStatus.FAILED
            ).value
        n = conn.execute(
            webhook_deliveries.update()
            .where((d.id == delivery.id) & (d.lease_token == delivery.token))
            .values(**values)
            .returning(d.attempts)
        ).scalar_one()
        conn.execute(
            webhook_attempts.insert().values(
                delivery_id=delivery.id,
                n=int(n),
                node=node,
                started_ms=now - latency_ms,
                latency_ms=latency_ms,
                status_code=status_code,
                outcome=outcome.value,
                error=error,
            )
        )
        return outcome


def release_leases(store: SqlStore) -> int:
    """Embedded start-up: the data-directory lock means no other sender is alive, so
    deliveries claimed by a process that died are due again at once."""
    with store._tx() as conn:
        d = webhook_deliveries.c
        result = conn.execute(
            webhook_deliveries.update()
            .where((d.status == PENDING) & d.lease_token.is_not(None))
            .values(**CLEAR_LEASE)
        )
        return int(result.rowcount or 0)
