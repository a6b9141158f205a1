"""The schema, written once for SQLite and PostgreSQL (SQLAlchemy Core).

Times are integer epoch milliseconds.

Changing the schema (ARCHITECTURE.md "Schema migrations"): change the tables here, add a
revision file under ``migrations/versions/`` (``NNNN_what.py``, ``down_revision`` = the
previous head) and append its id to ``REVISIONS``.  tests/unit/test_migrations.py checks
that the history, ``REVISIONS`` and these tables agree on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

# Every Alembic revision id, oldest first; the last one is what this release runs on.
REVISIONS: tuple[str, ...] = ("0001", "0002")
HEAD = REVISIONS[-1]

metadata = MetaData()

# The lease columns (jobs and webhook_deliveries) when a lease ends.
# nosec B105: "lease_token" is a column name being cleared, not a password.
CLEAR_LEASE: dict[str, Any] = {"lease_owner": None, "lease_token": None, "lease_expires_ms": None}  # nosec B105

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("settings", Text, nullable=False),
    Column("parent_id", String(32), nullable=True),
    Column("manage_token_hash", String(64), nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("last_seq", BigInteger, nullable=False, default=0),
    Column("progress", Text, nullable=True),
    Column("preview", Text, nullable=True),
    Column("images", Text, nullable=False, default="[]"),
    Column("error", Text, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_token", String(64), nullable=True),
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("enqueued_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("started_ms", BigInteger, nullable=True),
    Column("finished_ms", BigInteger, nullable=True),
    Column("last_progress_ms", BigInteger, nullable=True),
)
Index("jobs_queue", jobs.c.status, jobs.c.enqueued_ms)

job_events = Table(
    "job_events",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("type", String(24), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # in_flight | done
    Column("status_code", Integer, nullable=True),
    Column("response", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)

meta = Table(
    "safelight_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# -- Webhooks and lineage (issue 9) --------------------------------------------------------
# Created by migrations/versions/0002_webhooks_lineage.py.

# A job's webhook, fixed at creation.  ``events``: comma-separated WebhookEvent values.
job_webhooks = Table(
    "job_webhooks",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", String(128), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# One row per (job event, webhook): inserted in the transaction that appends the event,
# so an acknowledged event always has its delivery.  Claimed by a dispatcher under a lease
# whose token fences the result write (like jobs).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),  # the webhook-id header
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("event", String(16), nullable=False),  # WebhookEvent
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),  # the exact JSON bytes sent on every attempt
    Column("status", String(16), nullable=False),  # DeliveryStatus
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_token", String(64), nullable=True),
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("finished_ms", BigInteger, nullable=True),
)
Index("webhook_deliveries_due", webhook_deliveries.c.status, webhook_deliveries.c.next_attempt_ms)
Index("webhook_deliveries_job", webhook_deliveries.c.job_id, webhook_deliveries.c.seq, unique=True)

# Every attempt, for the job's raw view and for operators.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "delivery_id",
        String(40),
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("n", Integer, primary_key=True),
    Column("node", String(64), nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("outcome", String(16), nullable=False),  # AttemptOutcome
    Column("error", Text, nullable=True),
)

# Lineage: children of a job (restarts made from it).
Index("jobs_parent", jobs.c.parent_id)
# -- end of issue 9 block -------------------------------------------------------------------
