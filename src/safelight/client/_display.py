"""What the command line shows while it follows a job, on stderr.

A terminal gets one live rich line: status, bar, step, percent, ETA, queue position,
attempt and the transport in use (or "reconnecting in Ns").  Anything else (a pipe, a CI
log) gets one plain line per status change.  ``--json`` shows nothing here: stdout carries
the events.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from safelight.client.models import Event, Job
from safelight.types import EventType, Transport

_TRANSPORT_NAMES = {Transport.WS: "WebSocket", Transport.SSE: "SSE", Transport.POLL: "polling"}


class StreamStatus(Protocol):
    @property
    def transport(self) -> Transport | None: ...

    @property
    def state(self) -> str: ...

    @property
    def retry_at(self) -> float | None: ...

    @property
    def reason(self) -> str | None: ...


@dataclass
class JobState:
    """The job as the events so far describe it."""

    status: str = "connecting"
    step: int = 0
    total: int = 0
    fraction: float = 0.0
    eta_s: float | None = None
    position: int | None = None
    queue_eta_s: float | None = None
    attempt: int = 1
    max_attempts: int | None = None
    cancelling: bool = False

    @classmethod
    def from_job(cls, job: Job | None) -> JobState:
        if job is None:
            return cls()
        progress = job.progress
        return cls(
            status=job.status.value,
            step=progress.step if progress else 0,
            total=progress.total_steps if progress else job.settings.steps,
            fraction=progress.fraction if progress else 0.0,
            eta_s=progress.eta_s if progress else None,
            position=job.queue.position,
            queue_eta_s=job.queue.eta_s,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            cancelling=job.cancel_requested and not job.terminal,
        )

    def apply(self, event: Event) -> bool:
        """Update from one event; True when the status line changed meaningfully."""
        data = event.data
        before = self.status
        self.attempt = event.attempt or self.attempt
        kind = event.type
        if kind in (EventType.QUEUED, EventType.POSITION):
            self.status = "queued"
            self.position = data.get("position")
            self.queue_eta_s = data.get("eta_s")
            if kind == EventType.QUEUED:
                self.step, self.fraction, self.eta_s = 0, 0.0, None
        elif kind == EventType.RUNNING:
            self.status = "running"
            self.position = None
        elif kind == EventType.PROGRESS:
            self.status = "running"
            self.step = int(data.get("step") or 0)
            self.total = int(data.get("total_steps") or self.total)
            self.fraction = float(data.get("fraction") or 0.0)
            self.eta_s = data.get("eta_s")
        elif kind == EventType.UPLOADING:
            self.status = "uploading"
            self.fraction = 1.0
            self.step = self.total or self.step
        elif kind == EventType.RETRY:
            self.attempt = int(data.get("attempt") or self.attempt)
            self.max_attempts = data.get("max_attempts") or self.max_attempts
            self.status = "retrying"
        elif kind == EventType.CANCEL_REQUESTED:
            self.status = "cancelling"
            self.cancelling = True
        elif kind in (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED):
            self.status = kind
            self.cancelling = False
            if kind == EventType.COMPLETED:
                self.fraction = 1.0
        if self.cancelling and self.status in ("running", "uploading"):
            self.status = "cancelling"  # the worker stops at its next step
        return self.status != before


def _secs(value: float | None) -> str:
    if value is None:
        return "--"
    value = max(0.0, float(value))
    if value < 60:
        return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"
    return f"{int(value // 60)}m{int(value % 60):02d}s"


def connection_text(stream: StreamStatus | None) -> str:
    if stream is None:
        return ""
    if stream.state == "reconnecting" and stream.retry_at is not None:
        wait = max(0.0, stream.retry_at - time.monotonic())
        return f"reconnecting in {wait:.0f}s"
    if stream.transport is not None:
        return f"via {_TRANSPORT_NAMES[stream.transport]}"
    return "connecting" if stream.state != "done" else ""


class View(Protocol):
    def start(self, stream: StreamStatus) -> None: ...

    def update(self, event: Event) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def stop(self) -> None: ...


class NullView:
    def start(self, stream: StreamStatus) -> None:
        pass

    def update(self, event: Event) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def stop(self) -> None:
        pass


class PlainView(NullView):
    """One line per status change (non-terminal stderr)."""

    def __init__(self, state: JobState) -> None:
        self.state = state
        self.stream: StreamStatus | None = None
        self._last = ""

    def start(self, stream: StreamStatus) -> None:
        self.stream = stream

    def update(self, event: Event) -> None:
        self.state.apply(event)
        s = self.state
        line = s.status
        if s.status == "queued" and s.position is not None:
            line += f" (position {s.position})"
        if s.status in ("running", "queued", "retrying"):
            line += f" - attempt {s.attempt}" + (f"/{s.max_attempts}" if s.max_attempts else "")
        conn = connection_text(self.stream)
        if conn and s.status in ("running", "queued"):
            line += f" - {conn}"
        if line != self._last:
            self._last = line
            print(line, file=sys.stderr, flush=True)


class _Line:
    """The live status line, re-rendered by rich on every refresh (so "reconnecting in
    Ns" counts down between events)."""

    def __init__(self, state: JobState, stream: StreamStatus) -> None:
        self.state = state
        self.stream = stream

    def __rich__(self) -> RenderableType:
        s = self.state
        grid = Table.grid(padding=(0, 1))
        status = Text(f"{s.status:<10}", style=_STYLES.get(s.status, "bold"))
        if s.status == "queued":
            pos = "?" if s.position is None else str(s.position)
            middle: RenderableType = Text(f"position {pos}  ETA {_secs(s.queue_eta_s)}")
        else:
            middle = ProgressBar(total=1.0, completed=s.fraction, width=30)
        steps = f"{s.step}/{s.total}" if s.total else ""
        pct = f"{s.fraction * 100:3.0f}%"
        eta = f"ETA {_secs(s.eta_s)}" if s.status == "running" else ""
        attempt = f"attempt {s.attempt}" + (f"/{s.max_attempts}" if s.max_attempts else "")
        conn = connection_text(self.stream)
        cells: list[RenderableType] = [
            status,
            middle,
            Text(steps),
            Text(pct),
            Text(eta),
            Text(attempt, style="dim"),
            Text(conn, style="cyan"),
        ]
        for _ in cells:
            grid.add_column()
        grid.add_row(*cells)
        reason = self.stream.reason
        if self.stream.state == "reconnecting" and reason:
            return Group(grid, Text(f"  {reason}", style="dim"))
        return grid


_STYLES = {
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "cancelling": "yellow",
    "queued": "bold blue",
}


class LiveView(NullView):
    """A rich live line on the terminal's stderr."""

    def __init__(self, state: JobState, console: Console) -> None:
        self.state = state
        self.console = console
        self.live: Live | None = None

    def start(self, stream: StreamStatus) -> None:
        self.live = Live(
            _Line(self.state, stream),
            console=self.console,
            refresh_per_second=8,
            transient=False,
        )
        self.live.start()

    def update(self, event: Event) -> None:
        self.state.apply(event)
        if self.live is not None:
            self.live.refresh()

    def pause(self) -> None:
        if self.live is not None:
            self.live.stop()

    def resume(self) -> None:
        if self.live is not None:
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def make_view(*, json_mode: bool, initial: Job | None) -> View:
    if json_mode:
        return NullView()
    state = JobState.from_job(initial)
    console = Console(stderr=True)
    if console.is_terminal:
        return LiveView(state, console)
    return PlainView(state)
