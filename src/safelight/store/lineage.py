"""Reads for a job's family: the restart tree it belongs to and each member's attempts.

``parent_id`` links a restart to the job it was made from; retries stay inside one job
(its ``attempt`` counter and ``retry`` events).  The tree is bounded (depth and size) so a
long chain of restarts cannot make one request expensive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from safelight.models import Event, JobRecord
from safelight.store.schema import job_events, jobs
from safelight.types import EventType

if TYPE_CHECKING:
    from safelight.store.sql import SqlStore

MAX_DEPTH = 50
# Events that say how an attempt went (progress and previews are not needed).
ATTEMPT_EVENTS = (
    EventType.RUNNING,
    EventType.COMPLETED,
    EventType.FAILED,
    EventType.CANCELLED,
    EventType.RETRY,
)


@dataclass
class Family:
    root_id: str
    jobs: list[JobRecord]  # the root first, then breadth-first by creation time
    events: dict[str, list[Event]]  # job id -> its ATTEMPT_EVENTS in seq order
    truncated: bool


def read_family(store: SqlStore, job_id: str, limit: int) -> Family | None:
    from safelight.store.sql import _record, event_of

    with store._read() as conn:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            return None
        job = _record(row._mapping)
        truncated = False
        for _ in range(MAX_DEPTH):
            if job.parent_id is None:
                break
            parent = conn.execute(select(jobs).where(jobs.c.id == job.parent_id)).first()
            if parent is None:
                break
            job = _record(parent._mapping)
        else:
            truncated = job.parent_id is not None
        members = [job]
        frontier = [job.id]
        while frontier and len(members) < limit:
            children = conn.execute(
                select(jobs)
                .where(jobs.c.parent_id.in_(frontier))
                .order_by(jobs.c.created_ms, jobs.c.id)
                .limit(limit - len(members) + 1)
            ).all()
            found = [_record(c._mapping) for c in children]
            if len(members) + len(found) > limit:
                truncated = True
                found = found[: limit - len(members)]
            members += found
            frontier = [c.id for c in found]
        events: dict[str, list[Event]] = {m.id: [] for m in members}
        for r in conn.execute(
            select(job_events)
            .where(
                job_events.c.job_id.in_(list(events))
                & job_events.c.type.in_([t.value for t in ATTEMPT_EVENTS])
            )
            .order_by(job_events.c.job_id, job_events.c.seq)
        ):
            events[r.job_id].append(event_of(r))
    return Family(job.id, members, events, truncated)
