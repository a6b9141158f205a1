"""The three transports, each as one connection object with the same small surface.

A ``Connection`` is opened with a cursor (``after``) and then read frame by frame:

* ``open()`` returns the ``Welcome`` that proves the transport works (polling synthesises
  one from its first response), or ``End(at_terminal=True)`` when the server says the log
  is already complete from this cursor (SSE 204);
* ``receive()`` returns ``Welcome | Ping | Event | End``; it raises ``TransportError`` when
  the connection breaks, is refused, or stays silent past the dead timeout;
* ``aclose()`` is idempotent.

Errors that no reconnect can fix (an unknown job) propagate as ``safelight.errors``
classes; everything a reconnect might fix is a ``TransportError``.  The ladder that picks a
transport, reconnects and dedupes is ``safelight.client.stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Protocol

import httpx
from httpx_sse import EventSource, SSEError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from safelight.client.errors import (
    ConnectionFailed,
    UnexpectedResponse,
    exception_from_problem,
    parse_problem,
)
from safelight.client.models import End, Event, EventPage, Frame, Ping, Welcome
from safelight.errors import NotFound, RateLimited, Unavailable
from safelight.types import Transport

# Close codes that mean "reconnect": 1012 service restart (API.md), 1001 going away.
WS_NORMAL_CLOSURE = 1000
# Refusals that mean "this transport is not offered here" rather than "try again".
_REFUSAL_STATUSES = frozenset({403, 404, 405, 426})
TRANSPORT_DISABLED = "transport_disabled"


class TransportError(Exception):
    """A connection failed in a way a reconnect (or a lower transport) may fix.

    ``refused``: the server answered and declined this transport (HTTP 403/404 before the
    WebSocket upgrade, SSE 404 ``transport_disabled``), so retrying it now is pointless.
    ``dead``: no frame at all for the dead timeout.
    """

    def __init__(self, reason: str, *, refused: bool = False, dead: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused
        self.dead = dead


class CursorReset(Exception):
    """Polling answered 400: the cursor is beyond the job's last event (API.md)."""


class Connection(Protocol):
    transport: Transport

    async def open(self) -> Welcome | End: ...

    async def receive(self) -> Frame: ...

    async def aclose(self) -> None: ...


def _frame_from_json(text: str | bytes, transport: Transport) -> Frame:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TransportError(f"{transport.value}: frame is not JSON") from exc
    if not isinstance(data, dict):
        raise TransportError(f"{transport.value}: frame is not a JSON object")
    kind = data.get("type")
    if kind == "welcome":
        return Welcome.from_dict(data)
    if kind == "ping":
        last = data.get("last_seq")
        return Ping(last if isinstance(last, int) else None)
    if "seq" not in data:
        return Ping()  # an unknown control frame from a newer server: harmless
    return Event.from_dict(data, transport)


def _http_to_ws(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


class WebSocketConnection:
    """``GET /api/jobs/{id}/ws?after=N``.  Sends no ``Origin`` (a non-browser client)."""

    transport = Transport.WS

    def __init__(
        self,
        base_url: str,
        job_id: str,
        after: int,
        *,
        open_timeout_s: float,
        dead_after_s: float,
        headers: dict[str, str],
    ) -> None:
        self.url = f"{_http_to_ws(base_url)}/api/jobs/{job_id}/ws?after={after}"
        self._open_timeout_s = open_timeout_s
        self._dead_after_s = dead_after_s
        self._headers = headers
        self._ws: ClientConnection | None = None

    async def open(self) -> Welcome | End:
        try:
            self._ws = await connect(
                self.url,
                additional_headers=self._headers,
                user_agent_header=self._headers.get("User-Agent"),
                open_timeout=self._open_timeout_s,
                # The server pings at the application level; our dead timer watches those.
                ping_interval=None,
                compression=None,
                max_size=4 * 1024 * 1024,
                close_timeout=1.0,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            problem = parse_problem(bytes(exc.response.body or b""))
            code = problem.get("code")
            if status == 404 and code == "not_found":
                raise NotFound(str(problem.get("detail") or "Not found"), code="not_found") from exc
            raise TransportError(
                f"WebSocket refused by the server (HTTP {status})",
                refused=status in _REFUSAL_STATUSES,
            ) from exc
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise TransportError(f"WebSocket did not connect: {exc or type(exc).__name__}") from exc
        frame = await self.receive()
        if not isinstance(frame, Welcome):
            raise TransportError("WebSocket: first frame was not a welcome")
        return frame

    async def receive(self) -> Frame:
        if self._ws is None:
            raise TransportError("WebSocket is not open")
        try:
            message = await asyncio.wait_for(self._ws.recv(), self._dead_after_s)
        except TimeoutError as exc:
            raise TransportError(
                f"WebSocket silent for {self._dead_after_s:g} s", dead=True
            ) from exc
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            if code == WS_NORMAL_CLOSURE:
                return End(reason="WebSocket closed normally")
            raise TransportError(f"WebSocket closed ({code})") from exc
        except OSError as exc:
            raise TransportError(f"WebSocket broke: {exc}") from exc
        return _frame_from_json(message, Transport.WS)

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()


class SSEConnection:
    """``GET /api/jobs/{id}/stream?after=N`` read with httpx-sse."""

    transport = Transport.SSE

    def __init__(
        self,
        http: httpx.AsyncClient,
        job_id: str,
        after: int,
        *,
        open_timeout_s: float,
        dead_after_s: float,
    ) -> None:
        self._http = http
        self._path = f"/api/jobs/{job_id}/stream"
        self._after = after
        # The read timeout is the dead timer: the server sends something every <= 15 s.
        self._timeout = httpx.Timeout(dead_after_s, connect=open_timeout_s)
        self._stack: AsyncExitStack | None = None
        self._events: Any = None

    async def open(self) -> Welcome | End:
        self._stack = AsyncExitStack()
        try:
            response = await self._stack.enter_async_context(
                self._http.stream(
                    "GET",
                    self._path,
                    params={"after": self._after},
                    headers={"Accept": "text/event-stream", "Cache-Control": "no-store"},
                    timeout=self._timeout,
                )
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"SSE did not connect: {exc or type(exc).__name__}") from exc
        if response.status_code == 204:
            return End(at_terminal=True, reason="SSE 204: the log is complete")
        if response.status_code != 200:
            body = await _read_quietly(response)
            problem = parse_problem(body)
            code = problem.get("code")
            if response.status_code == 404 and code != TRANSPORT_DISABLED:
                raise exception_from_problem(404, problem, response.headers)
            raise TransportError(
                f"SSE refused by the server (HTTP {response.status_code}"
                + (f", {code})" if code else ")"),
                refused=response.status_code in _REFUSAL_STATUSES,
            )
        self._events = EventSource(response).aiter_sse()
        frame = await self.receive()
        if not isinstance(frame, Welcome):
            raise TransportError("SSE: first message was not a welcome")
        return frame

    async def receive(self) -> Frame:
        if self._events is None:
            raise TransportError("SSE is not open")
        try:
            sse = await self._events.__anext__()
        except StopAsyncIteration:
            return End(reason="SSE stream ended")
        except httpx.ReadTimeout as exc:
            raise TransportError("SSE silent for too long", dead=True) from exc
        except (httpx.HTTPError, SSEError) as exc:
            raise TransportError(f"SSE broke: {exc or type(exc).__name__}") from exc
        if sse.event == "welcome":
            return Welcome.from_dict(json.loads(sse.data or "{}"))
        if sse.event == "ping":
            frame = _frame_from_json(sse.data, Transport.SSE) if sse.data else Ping()
            return frame if isinstance(frame, Ping) else Ping()
        if sse.event != "message" or not sse.data:
            return Ping()
        return _frame_from_json(sse.data, Transport.SSE)

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        events, self._events = self._events, None
        if events is not None:
            with contextlib.suppress(Exception):
                await events.aclose()
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()


async def _read_quietly(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""


# One poll of the job's events: (after, wait) -> page (``AsyncClient.poll_events``).
PollFn = Callable[[int, float], Awaitable[EventPage]]


class PollConnection:
    """``GET /api/jobs/{id}/events?after=N&wait=S``: long polling as a connection.

    ``poll`` sends one request; the client passes it in, so this module never needs the
    client (the client imports the transports, never the reverse).
    """

    transport = Transport.POLL

    def __init__(self, poll: PollFn, after: int, *, wait_s: float) -> None:
        self._poll_once = poll
        self._after = after
        self._wait_s = wait_s
        self._buffer: deque[Frame] = deque()
        self._terminal = False
        self._last_seq = after

    async def _poll(self, wait: float) -> EventPage:
        try:
            return await self._poll_once(self._after, wait)
        except ConnectionFailed as exc:
            raise TransportError(f"poll failed: {exc.message}") from exc
        except (Unavailable, RateLimited, UnexpectedResponse) as exc:
            if exc.status == 400:
                raise CursorReset(exc.message) from exc
            raise TransportError(f"poll failed: HTTP {exc.status} {exc.message}") from exc
        except NotFound as exc:
            if exc.code == TRANSPORT_DISABLED:
                raise TransportError("polling refused by the server", refused=True) from exc
            raise

    def _take(self, page: EventPage) -> None:
        # Say how far the log goes before handing out the page, so that a historical
        # terminal event in a page that is not the last is not taken for the end.
        self._buffer.append(Ping(page.last_seq))
        for event in page.events:
            if event.seq > self._after:
                self._buffer.append(event.with_transport(Transport.POLL))
                self._after = event.seq
        self._last_seq = max(self._last_seq, page.last_seq)
        self._terminal = page.terminal

    async def open(self) -> Welcome | End:
        page = await self._poll(0)
        self._take(page)
        return Welcome(last_seq=page.last_seq, status=page.status)

    async def receive(self) -> Frame:
        if not self._buffer:
            if self._terminal and self._after >= self._last_seq:
                return End(at_terminal=True, reason="poll: the job is finished")
            started = time.monotonic()
            page = await self._poll(self._wait_s)
            self._take(page)
            quick = time.monotonic() - started < self._wait_s / 10
            if quick and not page.events and not page.terminal:
                # The server did not hold the request (no long polling): follow its pace.
                await asyncio.sleep(page.poll_after_ms / 1000)
        return self._buffer.popleft()

    async def aclose(self) -> None:
        self._buffer.clear()
