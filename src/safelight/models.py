"""Records and wire encodings shared by the store, the workers and the API.

``JobRecord`` is a row of the jobs table; ``Event`` is one entry of a job's event log with
its JSON encoded once (the same bytes go to every subscriber).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from safelight.types import EventType, JobStatus


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds -> RFC 3339 UTC with milliseconds (API.md)."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class Event:
    job_id: str
    seq: int
    type: EventType
    attempt: int
    ts_ms: int
    data: dict[str, Any]
    _json: str | None = field(default=None, repr=False)
    # Set by the write that committed it: False when that transaction queued no webhook
    # delivery, so the dispatcher need not look (events read back, or received from
    # another node, keep True: maybe).
    webhook_queued: bool = field(default=True, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.type.terminal

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "seq": self.seq,
            "type": self.type.value,
            "attempt": self.attempt,
            "ts": iso_ms(self.ts_ms),
            "data": self.data,
        }

    @property
    def json(self) -> str:
        # JSON never contains raw CR/LF (they are escaped), which makes it safe as one SSE
        # `data:` line (research/reliability-anchors.md 3.9).
        if self._json is None:
            self._json = dumps(self.to_dict())
        return self._json


@dataclass(slots=True)
class JobRecord:
    id: str
    status: JobStatus
    attempt: int
    max_attempts: int
    settings: dict[str, Any]
    parent_id: str | None
    manage_token_hash: str
    cancel_requested: bool
    last_seq: int
    progress: dict[str, Any] | None
    preview: dict[str, Any] | None
    images: list[dict[str, Any]]
    error: dict[str, Any] | None
    lease_owner: str | None
    lease_token: str | None
    lease_expires_ms: int | None
    enqueued_ms: int
    created_ms: int
    updated_ms: int
    started_ms: int | None
    finished_ms: int | None
    last_progress_ms: int | None

    @property
    def terminal(self) -> bool:
        return self.status.terminal
