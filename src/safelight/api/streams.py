"""The three transports over one cursor (API.md "Three transports, one cursor").

WebSocket and SSE share ``Stream`` (subscribe, backlog, live, dedupe, backfill, end after
the terminal event; streaming/follow.py) and differ only in their ``Wire``; polling reads
shared answers (streaming/polls.py) and long-polls on one wake-up per job.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, WebSocket
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from safelight.api.context import AppContext, ctx_of
from safelight.api.jobs import JOB_ID
from safelight.api.problems import from_error, problem
from safelight.api.security import check_origin
from safelight.api.sse import SSE_HEADERS, control_frame, event_frame
from safelight.errors import NotFound, SafelightError
from safelight.models import Event, dumps
from safelight.streaming.follow import Stream
from safelight.streaming.polls import CursorAhead
from safelight.streaming.writes import Message
from safelight.types import Transport

router = APIRouter()


def _disabled(transport: Transport) -> SafelightError:
    return NotFound(
        f"the {transport.value} transport is disabled on this server", code="transport_disabled"
    )


class WsWire:
    """WebSocket frames: one text message per event (API.md "WebSocket")."""

    transport = Transport.WS

    def event(self, event: Event) -> Message:
        return {"type": "websocket.send", "text": event.json}

    def ping(self, last_seq: int) -> Message:
        return {"type": "websocket.send", "text": dumps({"type": "ping", "last_seq": last_seq})}

    def greeting(self, welcome: dict[str, Any]) -> Message:
        return {"type": "websocket.send", "text": dumps(welcome)}

    def end(self) -> Message:
        return {"type": "websocket.close", "code": 1000, "reason": ""}

    def slow(self) -> Message:
        return {"type": "websocket.close", "code": 1013, "reason": SLOW_REASON}


class SseWire:
    """SSE frames on the response body (api/sse.py)."""

    transport = Transport.SSE

    def event(self, event: Event) -> Message:
        return {
            "type": "http.response.body",
            "body": event_frame(event.seq, event.json),
            "more_body": True,
        }

    def ping(self, last_seq: int) -> Message:
        body = control_frame("ping", dumps({"type": "ping", "last_seq": last_seq}))
        return {"type": "http.response.body", "body": body, "more_body": True}

    def greeting(self, welcome: dict[str, Any], retry_ms: int) -> Message:
        body = control_frame("welcome", dumps(welcome), retry_ms)
        return {"type": "http.response.body", "body": body, "more_body": True}

    def end(self) -> Message:
        return {"type": "http.response.body", "body": b"", "more_body": False}

    def slow(self) -> Message:
        return self.end()  # a complete body: the browser reconnects with Last-Event-ID


SLOW_REASON = "slow consumer; resume from your cursor"
WS_WIRE = WsWire()
SSE_WIRE = SseWire()


async def websocket_events(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /api/jobs/{job_id}/ws?after=N``: served by the stream gate (api/gate.py),
    not a FastAPI route, because every layer a request is dispatched through stays alive
    for a WebSocket's whole life, and memory per idle stream is a design target."""
    websocket = WebSocket(scope, receive, send)
    ctx = ctx_of(websocket)
    job_id = _job_id(scope)
    raw_after = websocket.query_params.get("after", "0")
    try:
        if not raw_after.isdigit():
            raise BadCursor("after must be a non-negative integer")
        if Transport.WS not in ctx.settings.transports:
            raise _disabled(Transport.WS)
        check_origin(
            websocket.headers.get("origin"),
            websocket.url.scheme,
            websocket.headers.get("host"),
            ctx.settings.allowed_origins,
        )
        key = ctx.open_stream(websocket, "ws")
    except SafelightError as exc:
        await _deny(websocket, exc)
        return
    stream = Stream(ctx.store, ctx.broadcaster, job_id, int(raw_after), WS_WIRE)
    try:
        try:
            welcome = await stream.open()
        except SafelightError as exc:
            await _deny(websocket, exc)
            return
        try:
            await websocket.accept()
        except (OSError, WebSocketDisconnect):
            return
        # Clients send nothing, so the connection's task only waits for the close; the
        # job's feed writes events (streaming/follow.py).  A stalled client is dropped
        # when a write times out or its queue overflows (close 1013), one that stops
        # answering protocol pings by uvicorn.  This frame lives as long as the stream:
        # it keeps nothing it no longer needs (the wrapper's parsed headers and URL).
        greeting = WS_WIRE.greeting(welcome)
        del websocket, welcome
        await stream.run(scope.get(RAW_SEND, send), receive, greeting)
    finally:
        stream.close()
        ctx.close_stream(key, "ws")


class BadCursor(SafelightError):
    status = 400
    code = "bad_cursor"
    title = "Bad cursor"


async def _deny(websocket: WebSocket, exc: SafelightError) -> None:
    """Refuse the handshake with an HTTP error (403 when the server cannot send one)."""
    try:
        await websocket.send_denial_response(from_error(exc))
    except RuntimeError:
        await websocket.close(1008)


JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the JSON routes' JOB_ID constraint


def _bad_param(field: str, message: str) -> Response:
    """The same problem+json as FastAPI's validation errors (api/problems.py)."""
    return problem(
        400,
        "bad_request",
        "Bad request parameters",
        f"{field}: {message}",
        errors=[{"field": field, "message": message}],
    )


async def sse_events(request: Request) -> ASGIApp:
    """``GET /api/jobs/{job_id}/stream?after=N``: a plain Starlette route with the lean
    ``EventStreamResponse`` (api/sse.py), for the same memory reason as the WebSocket."""
    ctx = ctx_of(request)
    job_id = str(request.path_params["job_id"])
    if Transport.SSE not in ctx.settings.transports:
        raise _disabled(Transport.SSE)
    if not JOB_ID_RE.fullmatch(job_id):
        return _bad_param("job_id", "must be 1..64 of A-Z a-z 0-9 _ -")
    raw_after = request.query_params.get("after", "0")
    if not raw_after.isdigit():
        return _bad_param("after", "must be a non-negative integer")
    after = int(raw_after)
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            return problem(
                400,
                "bad_cursor",
                "Bad Last-Event-ID",
                "Last-Event-ID must be a non-negative integer seq",
            )
        after = int(last_event_id.strip())
    stream = Stream(ctx.store, ctx.broadcaster, job_id, after, SSE_WIRE)
    try:
        welcome = await stream.open()
    except SafelightError:
        stream.close()
        raise
    if stream.done:
        stream.close()
        return Response(status_code=204)
    try:
        key = ctx.open_stream(request, "sse")
    except SafelightError:
        stream.close()  # refused (too many streams): do not leave the subscription behind
        raise
    retry_ms = random.randint(ctx.settings.sse_retry_min_ms, ctx.settings.sse_retry_max_ms)
    return EventStreamResponse(stream, ctx, key, SSE_WIRE.greeting(welcome, retry_ms))


class EventStreamResponse:
    """The SSE body: the headers, then ``Stream.run`` (the welcome, the catch-up, then
    the job's feed writes each event; this task waits for ``http.disconnect``).  On
    shutdown the stream ends with a complete body, so clients reconnect at once."""

    __slots__ = ("ctx", "greeting", "key", "stream")

    def __init__(self, stream: Stream, ctx: AppContext, key: str, greeting: Message) -> None:
        self.stream = stream
        self.ctx = ctx
        self.key = key
        self.greeting: Message | None = greeting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx, stream = self.ctx, self.stream
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            if ctx.shutting_down:
                await send(SSE_WIRE.end())
                return
            ctx.sse_streams.add(stream)
            greeting, self.greeting = self.greeting, None
            assert greeting is not None, "an EventStreamResponse is sent once"
            await stream.run(scope.get(RAW_SEND, send), receive, greeting)
        finally:
            ctx.sse_streams.discard(stream)
            stream.close()
            ctx.close_stream(self.key, "sse")


# HEAD and other methods fall through to the router (the gate serves GET and WS).
stream_routes = [
    Route("/api/jobs/{job_id}/stream", sse_events, methods=["GET"]),
]
STREAM_PATH = re.compile(r"/api/jobs/(?P<job_id>[^/]+)/(?P<kind>ws|stream|events)")
RAW_SEND = "safelight.raw_send"  # scope key: the server's own send (api/gate.py)


def stream_kind(scope: Scope) -> str | None:
    """``ws`` / ``stream`` / ``events`` when the gate serves this request, else None."""
    match = STREAM_PATH.fullmatch(scope["path"])
    if match is None:
        return None
    kind = match["kind"]
    if scope["type"] == "websocket":
        return kind if kind == "ws" else None
    return kind if kind != "ws" and scope.get("method") == "GET" else None


def _job_id(scope: Scope) -> str:
    match = STREAM_PATH.fullmatch(scope["path"])
    assert match is not None, "only for paths that stream_kind picked"
    scope["path_params"] = {"job_id": match["job_id"]}
    return str(match["job_id"])


async def serve_http(scope: Scope, receive: Receive, send: Send, kind: str) -> None:
    """GET ``/stream`` or ``/events`` that ``stream_kind`` picked, with errors mapped to
    problem+json as the routes' exception handlers would.  (The gate calls
    ``websocket_events`` directly: one frame less for the life of a WebSocket.)"""
    _job_id(scope)
    request = Request(scope, receive)
    handler = sse_events if kind == "stream" else raw_poll
    response: ASGIApp
    try:
        response = await handler(request)
    except SafelightError as exc:
        response = from_error(exc)
    del request  # a stream's frame lives as long as it does: drop the parsed request
    await response(scope, receive, send)


@router.get(
    "/api/jobs/{job_id}/events", summary="Poll events from a cursor (long poll)", tags=["events"]
)
async def poll_events(
    request: Request,
    job_id: JOB_ID,
    after: Annotated[int, Query(ge=0)] = 0,
    wait: Annotated[float, Query(ge=0, le=25)] = 0,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """Answers are shared per job and cursor (streaming/polls.py).  ``ETag`` names an
    answer; a client that sends it back in ``If-None-Match`` gets ``304`` while nothing
    changed, and parked long polls wake together on the job's next publish.  (GET is
    served by the stream gate through ``raw_poll``; this route documents it in OpenAPI
    and answers HEAD.)"""
    return await answer_poll(ctx_of(request), job_id, after, wait, if_none_match)


async def answer_poll(
    ctx: AppContext, job_id: str, after: int, wait: float, if_none_match: str | None
) -> Response:
    if Transport.POLL not in ctx.settings.transports:
        raise _disabled(Transport.POLL)
    ctx.metrics.polls.inc()
    polls = ctx.polls
    try:
        answer = await polls.answer(job_id, after)
        if wait > 0 and not answer.terminal and (answer.empty or polls.holding(job_id)):
            # Park until there is something to say, and the job's coalescing window (if
            # one is open) is over (streaming/polls.py).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(wait, ctx.settings.long_poll_max_s)
            while answer.empty or polls.holding(job_id):
                left = deadline - loop.time()
                if left <= 0 or not await polls.wait_for_change(answer, left):
                    break
                answer = await polls.answer(job_id, after)
                if answer.terminal:
                    break
    except CursorAhead as exc:
        return problem(400, exc.code, exc.title, exc.message, last_seq=exc.last_seq)
    headers = {"Cache-Control": "no-store", "ETag": answer.etag}
    if if_none_match is not None and answer.etag in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    if answer.events:  # one write of several events: latency of the oldest
        ctx.metrics.delivered("poll", answer.events[0], len(answer.events))
    return Response(answer.body, media_type="application/json", headers=headers)


async def raw_poll(request: Request) -> Response:
    """``GET /api/jobs/{job_id}/events`` without FastAPI's per-request machinery: a
    parked long poll holds only this frame and the shared wake-up (memory per parked
    poll is a target, docs/benchmarks.md).  Parameters are checked as the route above
    declares them, with the same problem+json."""
    job_id = str(request.path_params["job_id"])
    if not JOB_ID_RE.fullmatch(job_id):
        return _bad_param("job_id", "must be 1..64 of A-Z a-z 0-9 _ -")
    query = request.query_params
    raw_after = query.get("after", "0")
    if not raw_after.isdigit():
        return _bad_param("after", "Input should be a valid integer, greater than or equal to 0")
    raw_wait = query.get("wait", "0")
    try:
        wait = float(raw_wait)
    except ValueError:
        return _bad_param("wait", "Input should be a valid number")
    if not 0 <= wait <= 25:  # also refuses nan
        return _bad_param("wait", "Input should be a number from 0 to 25")
    ctx = ctx_of(request)
    return await answer_poll(
        ctx, job_id, int(raw_after), wait, request.headers.get("if-none-match")
    )
