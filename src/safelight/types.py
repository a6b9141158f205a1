"""Plain value types shared by every layer: state enums and their allowed transitions.

This module imports nothing from Safelight (the bottom of the import graph).
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """Held by a worker (running or uploading)."""
        return self in (JobStatus.RUNNING, JobStatus.UPLOADING)


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

# The job state machine (API.md).  FAILED -> QUEUED is a retry; RUNNING/UPLOADING ->
# QUEUED is a worker lost mid-attempt and requeued by the reaper.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.UPLOADING,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.QUEUED,
        }
    ),
    JobStatus.UPLOADING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    """Raised when code tries a state change the machine does not allow."""

    def __init__(self, old: JobStatus, new: JobStatus) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[old])) or "nothing (terminal)"
        super().__init__(f"job cannot go from {old} to {new}; from {old} it may go to {allowed}")
        self.old = old
        self.new = new


def check_transition(old: JobStatus, new: JobStatus) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(old, new)


class EventType(enum.StrEnum):
    QUEUED = "queued"
    POSITION = "position"
    RUNNING = "running"
    PROGRESS = "progress"
    PREVIEW = "preview"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    RETRY = "retry"

    @property
    def terminal(self) -> bool:
        return self in (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)


class ErrorType(enum.StrEnum):
    VALIDATION = "validation"
    PROVIDER = "provider"
    TIMEOUT = "timeout"
    NETWORK = "network"
    STORAGE = "storage"
    INTERNAL = "internal"


class NextStep(enum.StrEnum):
    RETRY = "retry"
    RETRY_LATER = "retry_later"
    EDIT_PROMPT = "edit_prompt"
    SWITCH_TO_POLLING = "switch_to_polling"
    RESTART = "restart"
    CONTACT_SUPPORT = "contact_support"


class Transport(enum.StrEnum):
    WS = "ws"
    SSE = "sse"
    POLL = "poll"


# -- Webhooks (issue 9) -------------------------------------------------------------------


class WebhookEvent(enum.StrEnum):
    """What a webhook may subscribe to; each names one event type of the job log."""

    STARTED = "started"
    PROGRESS = "progress"
    PREVIEW = "preview"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


WEBHOOK_EVENT_OF: dict[EventType, WebhookEvent] = {
    EventType.RUNNING: WebhookEvent.STARTED,
    EventType.PROGRESS: WebhookEvent.PROGRESS,
    EventType.PREVIEW: WebhookEvent.PREVIEW,
    EventType.COMPLETED: WebhookEvent.COMPLETED,
    EventType.FAILED: WebhookEvent.FAILED,
    EventType.CANCELLED: WebhookEvent.CANCELLED,
}
DEFAULT_WEBHOOK_EVENTS = (WebhookEvent.COMPLETED, WebhookEvent.FAILED, WebhookEvent.CANCELLED)


class DeliveryStatus(enum.StrEnum):
    """A webhook delivery: ``pending`` until one attempt gets a 2xx (``delivered``) or the
    retry window closes / the address is refused (``failed``)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class AttemptOutcome(enum.StrEnum):
    """One try at sending a delivery."""

    DELIVERED = "delivered"  # 2xx
    RETRYING = "retrying"  # an error or non-2xx; another attempt is scheduled
    GAVE_UP = "gave_up"  # an error or non-2xx after the retry window closed
    BLOCKED = "blocked"  # the address is not allowed (checked again at send time)
