"""The job service: what the API asks of jobs, and the bridge from store to broadcaster.

Every store write returns the events it appended; ``publish`` hands them to the
broadcaster (live fan-out), the metrics, and wakes idle workers when work arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from safelight.config import Settings
from safelight.errors import Conflict, Forbidden, NotFound
from safelight.models import Event, JobRecord, dumps
from safelight.providers.base import Provider
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.streaming.broadcaster import Broadcaster
from safelight.types import EventType, JobStatus, WebhookEvent

log = logging.getLogger("safelight.jobs")
# Events that change what a job is doing (progress/preview/position are too chatty to log).
LOGGED_EVENTS = frozenset(EventType) - {EventType.PROGRESS, EventType.PREVIEW, EventType.POSITION}
STATUS_AFTER = {e: JobStatus(e.value) for e in EventType if e.value in set(JobStatus)}


class Metrics(Protocol):
    def event_appended(self, event: Event) -> None: ...


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: AsyncStore,
        broadcaster: Broadcaster,
        providers: dict[str, Provider],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broadcaster = broadcaster
        self.providers = providers
        self.metrics = metrics
        self.work_available = asyncio.Event()
        # job id -> the running attempt's cancel flag (embedded fast path for cancel; the
        # lease heartbeat carries cancel_requested too, for workers on other machines).
        self.cancel_signals: dict[str, threading.Event] = {}
        # Set at shutdown: provider threads stop at their next step WITHOUT the job being
        # cancelled (the lease lapses and the job is requeued on the next start).
        self.stopping = threading.Event()
        # Called with every batch of committed events this node sees (after fan-out);
        # the webhook dispatcher wakes on them.
        self.listeners: list[Callable[[list[Event]], None]] = []
        first = providers[settings.provider].info.seconds_per_step
        self._avg_job_s = max(0.5, first * 30)

    # -- estimates --------------------------------------------------------------------

    def eta(self, position: int) -> float | None:
        slots = max(1, self.settings.concurrency)
        return round(position * self._avg_job_s / slots, 1)

    def record_duration(self, seconds: float) -> None:
        self._avg_job_s = 0.7 * self._avg_job_s + 0.3 * seconds

    # -- publishing -------------------------------------------------------------------

    def publish(self, events: Iterable[Event]) -> None:
        """Events this process just committed.  Embedded: fan them out at once.
        Scale-out: the PostgreSQL listener delivers them (to every node, this one too)."""
        events = list(events)
        for event in events:
            if self.metrics is not None:
                self.metrics.event_appended(event)
            if event.type in LOGGED_EVENTS:
                # One record per transition, from the node that committed it: grep a job id
                # across every node's log to follow it (docs/security.md "Logs").
                log.info(
                    "job %s",
                    event.type.value,
                    extra={
                        "job_id": event.job_id,
                        "attempt": event.attempt,
                        "seq": event.seq,
                        "event": event.type.value,
                        "status": STATUS_AFTER.get(event.type),
                        "node": self.settings.node_name,
                        "reason": event.data.get("reason"),
                        "code": (event.data.get("error") or {}).get("code"),
                    },
                )
        if self.settings.database_url is None:
            self.deliver(events)

    def deliver(self, events: list[Event]) -> None:
        """Fan committed events out to this node: streams, idle workers, cancel flags."""
        self.broadcaster.publish(events)
        for event in events:
            if event.type is EventType.QUEUED:
                self.work_available.set()
            elif event.type is EventType.CANCEL_REQUESTED:
                signal = self.cancel_signals.get(event.job_id)
                if signal is not None:
                    signal.set()
        for listener in self.listeners:
            listener(events)

    # -- API operations ---------------------------------------------------------------

    async def create(
        self,
        settings: dict[str, Any],
        parent_id: str | None,
        webhook: tuple[str, list[WebhookEvent]] | None = None,
    ) -> tuple[JobRecord, str]:
        token = secrets.token_urlsafe(24)
        job, events = await self.store.write(
            SqlStore.create_job,
            settings=settings,
            parent_id=parent_id,
            manage_token_hash=hash_token(token),
            max_attempts=self.settings.max_attempts,
            queue_limit=self.settings.queue_limit,
            eta=self.eta,
            webhook=webhook,
        )
        self.publish(events)
        return job, token

    async def get(self, job_id: str) -> JobRecord:
        job = await self.store.read(SqlStore.get_job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    async def authorize(self, job_id: str, token: str | None) -> JobRecord:
        job = await self.get(job_id)
        if not token or not hmac.compare_digest(hash_token(token), job.manage_token_hash):
            raise Forbidden("a valid manage token is required (Authorization: Bearer ...)")
        return job

    async def cancel(self, job_id: str, token: str | None) -> tuple[JobRecord, int]:
        job = await self.authorize(job_id, token)
        if job.status is JobStatus.COMPLETED:
            raise Conflict("the job has already completed", code="already_completed")
        if job.status is JobStatus.FAILED:
            raise Conflict("the job has already failed", code="already_failed")
        job, events = await self.store.write(SqlStore.request_cancel, job_id, eta=self.eta)
        self.publish(events)
        if job.status is JobStatus.COMPLETED:
            raise Conflict("the job has already completed", code="already_completed")
        if job.status is JobStatus.FAILED:
            raise Conflict("the job has already failed", code="already_failed")
        if job.status.active:
            signal = self.cancel_signals.get(job_id)
            if signal is not None:
                signal.set()
            return job, 202
        return job, 200

    async def retry(self, job_id: str, token: str | None) -> JobRecord:
        await self.authorize(job_id, token)
        job, events = await self.store.write(SqlStore.retry, job_id, eta=self.eta)
        self.publish(events)
        return job

    async def queue_position(self, job: JobRecord) -> int | None:
        if job.status is not JobStatus.QUEUED:
            return None
        return await self.store.read(SqlStore.queue_position, job.id)

    async def reap(self, *, everything: bool = False) -> list[Event]:
        events = await self.store.write(SqlStore.reap, everything=everything, eta=self.eta)
        self.publish(events)
        return events


def job_view(job: JobRecord, position: int | None, eta: float | None) -> dict[str, Any]:
    """The job object of API.md."""
    from safelight.models import iso_ms

    base = f"/api/jobs/{job.id}"
    return {
        "id": job.id,
        "status": job.status.value,
        "cancel_requested": job.cancel_requested,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "settings": job.settings,
        "parent_id": job.parent_id,
        "progress": job.progress,
        "queue": {"position": position, "eta_s": eta if position is not None else None},
        "preview": job.preview,
        "images": job.images,
        "error": job.error,
        "last_seq": job.last_seq,
        "created_at": iso_ms(job.created_ms),
        "updated_at": iso_ms(job.updated_ms),
        "started_at": iso_ms(job.started_ms),
        "finished_at": iso_ms(job.finished_ms),
        "links": {
            "self": base,
            "page": f"/jobs/{job.id}",
            "ws": f"{base}/ws",
            "stream": f"{base}/stream",
            "events": f"{base}/events",
            "cancel": f"{base}/cancel",
            "retry": f"{base}/retry",
        },
    }


def job_json(view: dict[str, Any]) -> str:
    return dumps(view)
