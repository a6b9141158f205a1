"""The status line's model: what the events say about the job."""

from __future__ import annotations

from typing import Any

from safelight.client._display import JobState, PlainView, connection_text
from safelight.client.models import Event
from safelight.types import Transport


def ev(seq: int, kind: str, attempt: int = 1, **data: Any) -> Event:
    return Event(job_id="j", seq=seq, type=kind, attempt=attempt, ts=None, data=data)


def test_progress_queue_and_cancel() -> None:
    state = JobState()
    state.apply(ev(1, "queued", position=3, eta_s=9.0))
    assert (state.status, state.position) == ("queued", 3)
    state.apply(ev(2, "running", worker="w"))
    state.apply(ev(3, "progress", step=5, total_steps=10, fraction=0.5, eta_s=2.0))
    assert (state.status, state.step, state.total, state.eta_s) == ("running", 5, 10, 2.0)
    state.apply(ev(4, "cancel_requested"))
    state.apply(ev(5, "progress", step=6, total_steps=10, fraction=0.6, eta_s=1.0))
    assert state.status == "cancelling"
    state.apply(ev(6, "cancelled", reason="user", step=6))
    assert state.status == "cancelled"


def test_retry_counts_attempts() -> None:
    state = JobState(max_attempts=3)
    state.apply(ev(4, "failed", error={}))
    state.apply(ev(5, "retry", attempt=2, max_attempts=3, reason="manual"))
    state.apply(ev(6, "queued", attempt=2, position=1))
    assert (state.status, state.attempt, state.step) == ("queued", 2, 0)


class Status:
    transport: Transport | None = Transport.SSE
    state = "live"
    retry_at: float | None = None
    reason: str | None = None


def test_plain_view_prints_status_changes_only(capsys: Any) -> None:
    view = PlainView(JobState(max_attempts=3))
    view.start(Status())
    view.update(ev(1, "queued", position=1))
    view.update(ev(2, "running"))
    view.update(ev(3, "progress", step=1, total_steps=2, fraction=0.5))
    view.update(ev(4, "progress", step=2, total_steps=2, fraction=1.0))
    view.update(ev(5, "completed", images=[]))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "queued (position 1) - attempt 1/3 - via SSE",
        "running - attempt 1/3 - via SSE",
        "completed",
    ]


def test_connection_text() -> None:
    status = Status()
    assert connection_text(status) == "via SSE"
    status.transport = None
    status.state = "reconnecting"
    status.retry_at = 0.0
    assert connection_text(status) == "reconnecting in 0s"
