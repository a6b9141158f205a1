"""An in-memory job log and fake transports, for the ladder's unit tests.

Nothing here fakes our own server's network layer in an end-to-end test: the real server
tests live in tests/integration/test_client*.py.  These drive ``EventStream``'s decisions
(step down, reconnect, dedupe, backfill) deterministically and fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from safelight.client.models import End, Event, EventPage, Frame, Job, Ping, Welcome
from safelight.client.stream import EventStream, StreamSettings
from safelight.client.transports import CursorReset, TransportError
from safelight.types import JobStatus, Transport

FAST = StreamSettings(
    ws_open_timeout_s=0.2,
    sse_open_timeout_s=0.2,
    poll_open_timeout_s=0.2,
    dead_after_s=1.0,
    backoff_base_s=0.001,
    backoff_cap_s=0.005,
    failures_before_step_down=3,
    probe_interval_s=3600,
    long_poll_s=0.05,
    give_up_after_s=2.0,
)

TERMINAL = {"completed": JobStatus.COMPLETED, "failed": JobStatus.FAILED}


@dataclass
class Behaviour:
    """How one transport behaves; ``script`` is consumed one entry per open attempt,
    then ``default`` applies.  Entries: ``ok``, ``refuse``, ``fail``, ``hang``,
    ``drop:N`` (deliver N events, then break), ``skip:SEQ`` (never send SEQ),
    ``dup`` (resend everything from seq 1 after the welcome)."""

    default: str = "ok"
    script: list[str] = field(default_factory=list)
    opens: int = 0

    def next(self) -> str:
        self.opens += 1
        return self.script.pop(0) if self.script else self.default


class FakeLog:
    def __init__(self, job_id: str = "job1") -> None:
        self.job_id = job_id
        self.events: list[Event] = []
        self.status = JobStatus.QUEUED
        self.changed = asyncio.Condition()
        self.behaviour = {t: Behaviour() for t in Transport}
        self.polls: list[tuple[int, float]] = []
        self.reset_beyond = False

    def add(self, kind: str, **data: Any) -> Event:
        event = Event(
            job_id=self.job_id,
            seq=len(self.events) + 1,
            type=kind,
            attempt=1,
            ts=datetime.now(UTC),
            data=data,
        )
        self.events.append(event)
        if kind in TERMINAL:
            self.status = TERMINAL[kind]
        elif kind == "queued":
            self.status = JobStatus.QUEUED
        elif kind in ("running", "progress"):
            self.status = JobStatus.RUNNING
        return event

    async def publish(self, kind: str, **data: Any) -> Event:
        async with self.changed:
            event = self.add(kind, **data)
            self.changed.notify_all()
        return event

    def run(self, steps: int = 3, end: str = "completed") -> None:
        self.add("queued", position=1, eta_s=None)
        self.add("running", worker="w1")
        for step in range(1, steps + 1):
            self.add("progress", step=step, total_steps=steps, fraction=step / steps, eta_s=0)
        self.add(end)

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def welcome(self) -> Welcome:
        return Welcome(last_seq=self.last_seq, status=self.status)


class FakeConnection:
    def __init__(self, log: FakeLog, transport: Transport, after: int) -> None:
        self.log = log
        self.transport = transport
        self.after = after
        self.mode = "ok"
        self.sent = 0
        self.closed = False

    async def open(self) -> Welcome | End:
        self.mode = self.log.behaviour[self.transport].next()
        if self.mode == "refuse":
            raise TransportError(f"{self.transport} refused", refused=True)
        if self.mode == "fail":
            raise TransportError(f"{self.transport} failed")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.after > self.log.last_seq:
            if self.transport is Transport.POLL:
                raise CursorReset("beyond")
            self.after = self.log.last_seq
            return Welcome(last_seq=self.log.last_seq, status=self.log.status, reset=True)
        if self.mode == "dup":
            self.after = 0
        return self.log.welcome()

    async def receive(self) -> Frame:
        assert not self.closed
        if self.mode.startswith("drop:") and self.sent >= int(self.mode[5:]):
            raise TransportError(f"{self.transport} dropped")
        async with self.log.changed:
            while self.after >= self.log.last_seq:
                if self.log.status in TERMINAL.values():
                    return End(at_terminal=self.transport is not Transport.WS)
                try:
                    await asyncio.wait_for(self.log.changed.wait(), 0.05)
                except TimeoutError:
                    return Ping(self.log.last_seq)
            event = self.log.events[self.after]
        self.after += 1
        if self.mode.startswith("skip:") and event.seq == int(self.mode[5:]):
            return await self.receive()
        self.sent += 1
        return event.with_transport(self.transport)

    async def aclose(self) -> None:
        self.closed = True


class FakeClient:
    """Stands in for ``AsyncClient`` as the stream sees it."""

    def __init__(self, log: FakeLog) -> None:
        self.log = log
        self.gets = 0
        self.connections: list[FakeConnection] = []

    def connector(
        self, job_id: str, settings: StreamSettings
    ) -> Callable[[Transport, int], FakeConnection]:
        def connect(transport: Transport, after: int) -> FakeConnection:
            conn = FakeConnection(self.log, transport, after)
            self.connections.append(conn)
            return conn

        return connect

    async def poll_events(self, job_id: str, *, after: int = 0, wait: float = 0) -> EventPage:
        self.log.polls.append((after, wait))
        events = tuple(e.with_transport(Transport.POLL) for e in self.log.events[after:])
        return EventPage(
            events=events,
            last_seq=self.log.last_seq,
            status=self.log.status,
            terminal=self.log.status in TERMINAL.values(),
        )

    async def get(self, job_id: str) -> Job:
        self.gets += 1
        return Job.from_dict(
            {
                "id": job_id,
                "status": self.log.status.value,
                "attempt": 1,
                "max_attempts": 3,
                "settings": {"prompt": "p"},
                "last_seq": self.log.last_seq,
            }
        )

    def events(self, job_id: str, **kwargs: Any) -> EventStream:
        return EventStream(self, job_id, **kwargs)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        pass


def stream(log: FakeLog, **kwargs: Any) -> tuple[EventStream, FakeClient]:
    client = FakeClient(log)
    kwargs.setdefault("settings", FAST)
    return EventStream(client, log.job_id, **kwargs), client  # type: ignore[arg-type]


async def collect(s: EventStream, timeout: float = 5.0) -> list[Event]:
    async def run() -> list[Event]:
        return [e async for e in s]

    return await asyncio.wait_for(run(), timeout)
