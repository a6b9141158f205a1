"""The connection ladder: one lossless stream of a job's events over whichever transport
works (DESIGN.md, "The browser's connection ladder"; the browser and this client share it).

1. WebSocket with ``after=<cursor>``, proven when ``welcome`` arrives within ``ws_open_timeout_s``.
2. Else SSE, proven on ``welcome`` within ``sse_open_timeout_s``.
3. Else polling (long poll).
4. A transport that has worked once is reconnected with full-jitter backoff before the
   ladder steps down; ``failures_before_step_down`` failures in a row step down.  A
   transport the server refuses (disabled) or that never worked steps down at once.
5. No frame at all (pings included) for ``dead_after_s``: the connection is dead.
6. While on SSE or polling, WebSocket is probed every ``probe_interval_s``; the stream
   steps back up when a probe is welcomed.
7. An event is applied only if ``seq == cursor + 1``; duplicates are dropped; a gap is
   backfilled with one poll.  The stream stops after the terminal event.

The cursor only moves when an event is handed to the caller, so a reconnect (or a
cancelled ``__anext__``) never loses an event.  A terminal event is final only when it is
the newest event the server has told us about: a ``failed`` that a retry followed is
history, and the stream carries on through the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from safelight.client.errors import ConnectionFailed, TransportRefused
from safelight.client.models import End, Event, EventPage, Frame, Job, Ping, Welcome
from safelight.client.transports import Connection, CursorReset, TransportError
from safelight.errors import NotFound, SafelightError
from safelight.types import Transport

LADDER: tuple[Transport, ...] = (Transport.WS, Transport.SSE, Transport.POLL)
_NAMES = {Transport.WS: "WebSocket", Transport.SSE: "SSE", Transport.POLL: "polling"}


@dataclass(frozen=True)
class StreamSettings:
    """Every interval of the ladder; tests shrink them to milliseconds."""

    ws_open_timeout_s: float = 3.0
    sse_open_timeout_s: float = 4.0
    poll_open_timeout_s: float = 10.0
    dead_after_s: float = 35.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 10.0
    failures_before_step_down: int = 3
    probe_interval_s: float = 30.0
    long_poll_s: float = 20.0
    # Raise ConnectionFailed after this long without any frame or connection (None: never).
    give_up_after_s: float | None = 120.0

    def open_timeout(self, transport: Transport) -> float:
        return {
            Transport.WS: self.ws_open_timeout_s,
            Transport.SSE: self.sse_open_timeout_s,
            Transport.POLL: self.poll_open_timeout_s,
        }[transport]


def full_jitter(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """AWS's "full jitter": uniform in [0, min(cap, base * 2**(failures-1))]."""
    return rng.uniform(0.0, min(cap, base * 2 ** max(0, failures - 1)))


Connector = Callable[[Transport, int], Connection]


class StreamClient(Protocol):
    """What the stream needs of a client: ``AsyncClient`` (tests pass a fake).  Typed by
    shape, so the client imports the stream and never the reverse."""

    def connector(self, job_id: str, settings: StreamSettings) -> Connector: ...

    async def poll_events(self, job_id: str, *, after: int = 0, wait: float = 0) -> EventPage: ...

    async def get(self, job_id: str) -> Job: ...


class EventStream:
    """Async iterator over a job's events from ``after``; see the module docstring.

    Attributes for a live display: ``transport`` (confirmed now, ``None`` while connecting
    or waiting to reconnect), ``state`` (``connecting`` | ``live`` | ``reconnecting`` |
    ``done``), ``retry_at`` (``time.monotonic()`` of the next attempt while reconnecting),
    ``reason`` (why the last step down or reconnect happened), ``cursor``, ``resets`` and
    ``job`` (re-read after a cursor reset).
    """

    def __init__(
        self,
        client: StreamClient,
        job_id: str,
        *,
        after: int = 0,
        transport: Transport | str | None = None,
        settings: StreamSettings | None = None,
        connector: Connector | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self.job_id = job_id
        self.cursor = after
        self.settings = settings or StreamSettings()
        self.forced = Transport(transport) if transport is not None else None
        self._ladder = (self.forced,) if self.forced else LADDER
        self._connector = connector or client.connector(job_id, self.settings)
        self._rng = rng or random.Random()

        self.transport: Transport | None = None
        self.state = "connecting"
        self.retry_at: float | None = None
        self.reason: str | None = None
        self.resets = 0
        self.job: Job | None = None

        self._rung = 0
        self._worked: set[Transport] = set()
        self._failures = 0
        self._delay = 0.0
        self._conn: Connection | None = None
        self._recv: asyncio.Task[Frame] | None = None
        self._probe: asyncio.Task[tuple[Connection, Welcome] | None] | None = None
        self._next_probe_at = time.monotonic() + self.settings.probe_interval_s
        self._pending: deque[Event] = deque()
        self._known_last_seq = after
        self._last_ok = time.monotonic()
        self._done = False

    # -- the iterator -------------------------------------------------------------------

    def __aiter__(self) -> EventStream:
        return self

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def __anext__(self) -> Event:
        try:
            while True:
                if self._pending:
                    return self._apply(self._pending.popleft())
                if self._done:
                    break
                if self._conn is None:
                    await self._connect()
                    continue
                frame = await self._next_frame()
                if frame is not None:
                    await self._handle(frame)
        except (SafelightError, TransportError):
            await self.aclose()
            raise
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Close every connection; the iterator then ends.  Idempotent."""
        self._done = True
        self.state = "done"
        self.retry_at = None
        await self._drop_connection()
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(BaseException):
                result = await probe
                if result is not None:
                    await result[0].aclose()

    async def reconnect(self) -> None:
        """Drop the current connection; the next read resumes from the cursor (on the
        same transport, without counting a failure)."""
        await self._drop_connection()
        self.transport = None
        self.state = "connecting"

    # -- applying events ----------------------------------------------------------------

    def _apply(self, event: Event) -> Event:
        self.cursor = event.seq
        # Final only if nothing newer is known: a failed event that a retry followed is not.
        if event.terminal and event.seq >= self._known_last_seq:
            self._done = True
        return event

    def _expected(self) -> int:
        return (self._pending[-1].seq if self._pending else self.cursor) + 1

    async def _handle(self, frame: Frame) -> None:
        self._last_ok = time.monotonic()
        if isinstance(frame, Event):
            self._failures = 0  # this connection delivers: the next drop starts afresh
            self._known_last_seq = max(self._known_last_seq, frame.seq)
            expected = self._expected()
            if frame.seq < expected:
                return  # a duplicate (reconnect overlap, or a probe opened with an old cursor)
            if frame.seq > expected:
                await self._backfill(expected - 1, frame.seq)
                if frame.seq < self._expected():
                    return
                if frame.seq > self._expected():
                    # The backfill could not close the gap: resume from the cursor instead.
                    await self._lost(TransportError(f"gap before seq {frame.seq}"))
                    return
            self._pending.append(frame)
        elif isinstance(frame, Ping):
            self._failures = 0
            if frame.last_seq is not None:
                self._known_last_seq = max(self._known_last_seq, frame.last_seq)
        elif isinstance(frame, Welcome):
            await self._welcome(frame)
        elif isinstance(frame, End):
            if frame.at_terminal:
                self._done = True
            else:
                await self._lost(TransportError(frame.reason or "stream ended"))

    async def _backfill(self, after: int, before: int) -> None:
        """Fetch events ``after < seq < before`` with plain polls (DESIGN.md step 8)."""
        cursor = after
        while cursor < before - 1:
            try:
                page = await self._client.poll_events(self.job_id, after=cursor, wait=0)
            except NotFound:
                raise
            except SafelightError:
                return  # the caller reconnects from the cursor instead
            fresh = [e for e in page.events if cursor < e.seq < before]
            if not fresh:
                return
            for event in fresh:
                if event.seq == self._expected():
                    self._pending.append(event.with_transport(Transport.POLL))
                cursor = event.seq

    async def _welcome(self, welcome: Welcome) -> None:
        self._known_last_seq = max(self._known_last_seq, welcome.last_seq)
        if welcome.reset:
            await self._reset(welcome.last_seq)
        elif welcome.terminal and self._expected() > welcome.last_seq:
            self._done = True  # the cursor already holds the terminal event

    async def _reset(self, last_seq: int | None) -> None:
        """The server says our cursor is beyond the log (API.md): re-read the job and go on
        from where the log really is."""
        self.resets += 1
        self._pending.clear()
        self.job = await self._client.get(self.job_id)
        self.cursor = self.job.last_seq if last_seq is None else last_seq
        self._known_last_seq = self.cursor
        if self.job.terminal:
            self._done = True

    # -- connecting ---------------------------------------------------------------------

    async def _connect(self) -> None:
        """Open a connection on the current rung (after any backoff), or step down."""
        while self._conn is None and not self._done:
            if self._delay > 0:
                self.state = "reconnecting"
                self.retry_at = time.monotonic() + self._delay
                await asyncio.sleep(self._delay)
                self._delay = 0.0
            self.state = "connecting"
            self.retry_at = None
            transport = self._ladder[self._rung]
            conn = self._connector(transport, self._expected() - 1)
            try:
                opened = await asyncio.wait_for(conn.open(), self.settings.open_timeout(transport))
            except CursorReset:
                await conn.aclose()
                await self._reset(None)
                continue
            except TimeoutError:
                await conn.aclose()
                self._failed(
                    transport,
                    TransportError(
                        f"{_NAMES[transport]} was not confirmed within "
                        f"{self.settings.open_timeout(transport):g} s"
                    ),
                )
                continue
            except TransportError as exc:
                await conn.aclose()
                self._failed(transport, exc)
                continue
            except BaseException:
                await conn.aclose()
                raise
            self._last_ok = time.monotonic()
            self._worked.add(transport)
            if isinstance(opened, End):
                await conn.aclose()
                self._done = True
                return
            self._conn = conn
            self.transport = transport
            self.state = "live"
            if self._rung > 0 and self.forced is None:
                self._next_probe_at = time.monotonic() + self.settings.probe_interval_s
            await self._welcome(opened)

    def _failed(self, transport: Transport, error: TransportError) -> None:
        """Decide what follows a failed open or a dropped connection."""
        self.transport = None
        settings = self.settings
        bottom = self._rung == len(self._ladder) - 1
        name = _NAMES[transport]
        if self.forced is not None and error.refused:
            raise TransportRefused(f"the server refused {name}: {error.reason}")
        if not bottom and (error.refused or transport not in self._worked):
            self._step_down(f"{error.reason}")
        else:
            self._failures += 1
            if not bottom and self._failures >= settings.failures_before_step_down:
                self._step_down(f"{name} failed {self._failures} times: {error.reason}")
            else:
                self.reason = error.reason
                self._delay = full_jitter(
                    self._failures, settings.backoff_base_s, settings.backoff_cap_s, self._rng
                )
        give_up = settings.give_up_after_s
        if give_up is not None and time.monotonic() - self._last_ok > give_up:
            raise ConnectionFailed(
                f"no connection to the server for {give_up:g} s (last error: {error.reason})"
            )

    def _step_down(self, reason: str) -> None:
        self._rung += 1
        self._failures = 0
        self._delay = 0.0
        self.reason = reason
        self._next_probe_at = time.monotonic() + self.settings.probe_interval_s

    async def _lost(self, error: TransportError) -> None:
        """The live connection broke: drop it and let ``_connect`` decide what's next."""
        transport = self._conn.transport if self._conn is not None else self._ladder[self._rung]
        await self._drop_connection()
        self._failed(transport, error)

    async def _drop_connection(self) -> None:
        recv, self._recv = self._recv, None
        if recv is not None and not recv.done():
            recv.cancel()
        if recv is not None:
            with contextlib.suppress(BaseException):
                await recv
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    # -- reading, and probing WebSocket while lower on the ladder ----------------------

    async def _next_frame(self) -> Frame | None:
        """The next frame of the live connection, or None after a swap or a drop.

        The receive runs as a task kept across calls, so a cancelled ``__anext__`` (the
        sync wrapper's Ctrl-C) resumes the same read instead of losing it.
        """
        assert self._conn is not None
        if self._recv is None:
            self._recv = asyncio.ensure_future(self._conn.receive())
        if (
            self._probe is None
            and self.forced is None
            and self._rung > 0
            and time.monotonic() >= self._next_probe_at
        ):
            self._probe = asyncio.ensure_future(self._open_probe(self._expected() - 1))
        waiting: set[asyncio.Future[object]] = {self._recv}  # type: ignore[arg-type]
        if self._probe is not None:
            waiting.add(self._probe)  # type: ignore[arg-type]
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._probe is not None and self._probe in done:
            probe, self._probe = self._probe, None
            opened = probe.result()
            self._next_probe_at = time.monotonic() + self.settings.probe_interval_s
            if opened is not None:
                await self._swap(*opened)
                return None
        if self._recv not in done:
            return None
        recv, self._recv = self._recv, None
        try:
            return recv.result()
        except TransportError as exc:
            await self._lost(exc)
            return None

    async def _open_probe(self, after: int) -> tuple[Connection, Welcome] | None:
        conn = self._connector(Transport.WS, after)
        try:
            opened = await asyncio.wait_for(conn.open(), self.settings.ws_open_timeout_s)
        except (TransportError, TimeoutError, SafelightError):
            await conn.aclose()
            return None
        except BaseException:
            await conn.aclose()
            raise
        if not isinstance(opened, Welcome) or opened.reset:
            await conn.aclose()
            return None
        return conn, opened

    async def _swap(self, conn: Connection, welcome: Welcome) -> None:
        await self._drop_connection()
        self._conn = conn
        self._rung = 0
        self._failures = 0
        self._worked.add(Transport.WS)
        self.transport = Transport.WS
        self.state = "live"
        self.reason = "stepped back up to WebSocket"
        await self._welcome(welcome)
