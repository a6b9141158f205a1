"""Typed views of what the server sends: jobs, events, the error object, stream frames.

Every model keeps the JSON it was built from in ``raw`` (so nothing the server adds later is
lost, and ``--json`` output can print it unchanged) and tolerates unknown fields.  Types
and shapes follow API.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safelight.types import TERMINAL, EventType, JobStatus, Transport

_TERMINAL_EVENTS = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 (``2026-11-24T10:00:00.123Z``) to an aware datetime; None stays None."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def job_status(value: Any) -> JobStatus | None:
    """A known status, or None (a newer server's status this client does not know)."""
    try:
        return JobStatus(value)
    except ValueError:
        return None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class JobError:
    """The error object of a failed job (API.md "The error object")."""

    type: str
    code: str
    message: str
    retryable: bool
    next_steps: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobError:
        return cls(
            type=str(data.get("type", "internal")),
            code=str(data.get("code", "internal_error")),
            message=str(data.get("message", "")),
            retryable=bool(data.get("retryable", False)),
            next_steps=tuple(str(s) for s in data.get("next_steps") or ()),
            detail=_dict(data.get("detail")),
        )


@dataclass(frozen=True)
class Image:
    """One final image of a completed job."""

    url: str
    width: int
    height: int
    content_type: str = "image/png"
    bytes: int | None = None
    seed: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Image:
        return cls(
            url=str(data["url"]),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            content_type=str(data.get("content_type", "image/png")),
            bytes=_int_or_none(data.get("bytes")),
            seed=_int_or_none(data.get("seed")),
        )


@dataclass(frozen=True)
class JobSettings:
    """What a job was asked to make (the server records the seed it chose)."""

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 30
    style: str | None = None
    seed: int | None = None
    num_images: int = 1
    provider: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSettings:
        return cls(
            prompt=str(data.get("prompt", "")),
            negative_prompt=str(data.get("negative_prompt", "")),
            width=int(data.get("width", 512)),
            height=int(data.get("height", 512)),
            steps=int(data.get("steps", 30)),
            style=data.get("style"),
            seed=_int_or_none(data.get("seed")),
            num_images=int(data.get("num_images", 1)),
            provider=data.get("provider"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Progress:
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    eta_s: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        return cls(
            step=int(data.get("step") or 0),
            total_steps=int(data.get("total_steps") or 0),
            fraction=float(data.get("fraction") or 0.0),
            eta_s=_float_or_none(data.get("eta_s")),
        )


@dataclass(frozen=True)
class QueueInfo:
    position: int | None = None
    eta_s: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueueInfo:
        return cls(
            position=_int_or_none(data.get("position")), eta_s=_float_or_none(data.get("eta_s"))
        )


@dataclass(frozen=True)
class Preview:
    url: str
    step: int
    width: int
    height: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preview:
        return cls(
            url=str(data["url"]),
            step=int(data.get("step") or 0),
            width=int(data.get("width") or 0),
            height=int(data.get("height") or 0),
        )


@dataclass(frozen=True)
class Job:
    """A job as ``GET /api/jobs/{id}`` returns it.

    ``manage_token`` is set only on the job returned by ``create`` (and ``restart``): it is
    the secret needed to cancel or retry, and the server never shows it again.
    """

    id: str
    status: JobStatus
    attempt: int
    max_attempts: int
    settings: JobSettings
    last_seq: int
    cancel_requested: bool = False
    parent_id: str | None = None
    progress: Progress | None = None
    queue: QueueInfo = field(default_factory=QueueInfo)
    preview: Preview | None = None
    images: tuple[Image, ...] = ()
    error: JobError | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: dict[str, str] = field(default_factory=dict)
    manage_token: str | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        progress = data.get("progress")
        preview = data.get("preview")
        error = data.get("error")
        token = data.get("manage_token")
        return cls(
            id=str(data["id"]),
            status=JobStatus(data["status"]),
            attempt=int(data.get("attempt", 1)),
            max_attempts=int(data.get("max_attempts", 1)),
            settings=JobSettings.from_dict(_dict(data.get("settings"))),
            last_seq=int(data.get("last_seq", 0)),
            cancel_requested=bool(data.get("cancel_requested", False)),
            parent_id=data.get("parent_id"),
            progress=Progress.from_dict(progress) if isinstance(progress, dict) else None,
            queue=QueueInfo.from_dict(_dict(data.get("queue"))),
            preview=Preview.from_dict(preview) if isinstance(preview, dict) else None,
            images=tuple(Image.from_dict(i) for i in data.get("images") or ()),
            error=JobError.from_dict(error) if isinstance(error, dict) else None,
            created_at=parse_time(data.get("created_at")),
            updated_at=parse_time(data.get("updated_at")),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
            links={str(k): str(v) for k, v in _dict(data.get("links")).items() if v},
            manage_token=str(token) if token else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class Event:
    """One entry of a job's event log.

    ``type`` is a plain string (compare it with ``safelight.types.EventType`` members) so a
    newer server's new event types do not break an older client.  ``transport`` is the
    transport that delivered this event (``None`` when it came from a gap backfill poll
    outside a stream, which counts as ``poll``).
    """

    job_id: str
    seq: int
    type: str
    attempt: int
    ts: datetime | None
    data: dict[str, Any]
    transport: Transport | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.type in _TERMINAL_EVENTS

    @property
    def error(self) -> JobError | None:
        """The error of a ``failed`` event."""
        err = self.data.get("error")
        return JobError.from_dict(err) if isinstance(err, dict) else None

    @property
    def images(self) -> tuple[Image, ...]:
        """The images of a ``completed`` event."""
        return tuple(Image.from_dict(i) for i in self.data.get("images") or ())

    def with_transport(self, transport: Transport) -> Event:
        return Event(
            job_id=self.job_id,
            seq=self.seq,
            type=self.type,
            attempt=self.attempt,
            ts=self.ts,
            data=self.data,
            transport=transport,
            raw=self.raw,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], transport: Transport | None = None) -> Event:
        return cls(
            job_id=str(data.get("job_id", "")),
            seq=int(data["seq"]),
            type=str(data["type"]),
            attempt=int(data.get("attempt", 1)),
            ts=parse_time(data.get("ts")),
            data=_dict(data.get("data")),
            transport=transport,
            raw=dict(data),
        )


@dataclass(frozen=True)
class EventPage:
    """One answer of ``GET /api/jobs/{id}/events``."""

    events: tuple[Event, ...]
    last_seq: int
    status: JobStatus | None
    terminal: bool
    poll_after_ms: int = 1000

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventPage:
        return cls(
            events=tuple(Event.from_dict(e, Transport.POLL) for e in data.get("events") or ()),
            last_seq=int(data.get("last_seq") or 0),
            status=job_status(data.get("status")),
            terminal=bool(data.get("terminal", False)),
            poll_after_ms=int(data.get("poll_after_ms") or 1000),
        )


@dataclass(frozen=True)
class Welcome:
    """The first frame of a stream (WebSocket and SSE); polling synthesises one."""

    last_seq: int
    status: JobStatus | None
    reset: bool = False

    @property
    def terminal(self) -> bool:
        return self.status is not None and self.status in TERMINAL

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Welcome:
        return cls(
            last_seq=int(data.get("last_seq") or 0),
            status=job_status(data.get("status")),
            reset=bool(data.get("reset", False)),
        )


@dataclass(frozen=True)
class Ping:
    """A keep-alive frame; carries the server's ``last_seq`` when it sends one."""

    last_seq: int | None = None


@dataclass(frozen=True)
class End:
    """The transport ended cleanly.  ``at_terminal``: the server said the job's log is
    complete from our cursor (SSE 204, WebSocket close 1000, poll ``terminal``)."""

    at_terminal: bool = False
    reason: str = ""


Frame = Welcome | Ping | Event | End
