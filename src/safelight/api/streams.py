"""The three transports over one cursor (API.md "Three transports, one cursor").

WebSocket and SSE share ``Follower`` (subscribe, backlog, live, dedupe, backfill, end after
the terminal event); polling reads the store directly and long-polls on a subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, WebSocket
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from safelight.api.context import AppContext, ctx_of
from safelight.api.jobs import JOB_ID
from safelight.api.problems import from_error, problem
from safelight.api.security import check_origin
from safelight.api.sse import EventStreamResponse, control_frame, event_frame
from safelight.errors import NotFound, SafelightError
from safelight.models import Event
from safelight.streaming.follow import Control, Follower, SlowConsumer
from safelight.streaming.polls import CursorAhead
from safelight.types import Transport

router = APIRouter()


def _disabled(transport: Transport) -> SafelightError:
    return NotFound(
        f"the {transport.value} transport is disabled on this server", code="transport_disabled"
    )


async def websocket_events(websocket: WebSocket) -> None:
    """``GET /api/jobs/{job_id}/ws?after=N``: a plain Starlette route, not a FastAPI one,
    because FastAPI's per-request dependency machinery stays alive for a WebSocket's whole
    life, and memory per idle stream is a design target (DESIGN.md)."""
    ctx = ctx_of(websocket)
    job_id = str(websocket.path_params["job_id"])
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
    follower = Follower(
        ctx.store,
        ctx.broadcaster,
        job_id,
        int(raw_after),
        Transport.WS,
    )
    try:
        try:
            welcome = await follower.open()
        except SafelightError as exc:
            await _deny(websocket, exc)
            return
        await websocket.accept()
        await _ws_session(websocket, ctx, follower, welcome)
    finally:
        follower.close()
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


async def _ws_session(
    websocket: WebSocket, ctx: AppContext, follower: Follower, welcome: Control
) -> None:
    """One task per connection (memory per idle stream is a design target).  Clients send
    nothing, so nothing is read: a vanished client is noticed when a write fails (pings
    go out every ``ping_interval_s``), a stalled one when a write times out or its queue
    overflows, and one that stops answering protocol pings is dropped by uvicorn."""
    try:
        try:
            await websocket.send_text(welcome.json)
        except RuntimeError:
            # The client left between its upgrade request and our accept: uvicorn's
            # wsproto skips an accept on a closing transport, so this first send is
            # refused as out of order.  Nothing to deliver (found by chaos R9).
            return
        async for item in follower.events():
            with follower.guarded_send():  # send_timeout_s, without a timer per send
                await websocket.send_text(item.json)
            if isinstance(item, Event):
                ctx.metrics.delivered("ws", item)
        await websocket.close(1000)
    except (SlowConsumer, TimeoutError):
        # The socket may be full: bounded, best effort (uvicorn then drops it).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await websocket.close(1013, "slow consumer; resume from your cursor")
    except (WebSocketDisconnect, OSError):
        return


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


async def sse_events(request: Request) -> Response:
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
    follower = Follower(ctx.store, ctx.broadcaster, job_id, after, Transport.SSE)
    try:
        welcome = await follower.open()
    except SafelightError:
        follower.close()
        raise
    if follower.done:
        follower.close()
        return Response(status_code=204)
    try:
        key = ctx.open_stream(request, "sse")
    except SafelightError:
        follower.close()  # refused (too many streams): do not leave the subscription behind
        raise
    retry_ms = random.randint(ctx.settings.sse_retry_min_ms, ctx.settings.sse_retry_max_ms)

    async def frames() -> AsyncGenerator[bytes, None]:
        ctx.sse_streams.add(follower.interrupt)
        try:
            if ctx.shutting_down:
                return
            yield control_frame("welcome", welcome.json, retry_ms)
            async for item in follower.events():
                if isinstance(item, Control):
                    yield control_frame(item.type, item.json)
                else:
                    yield event_frame(item.seq, item.json)
                    ctx.metrics.delivered("sse", item)
        except SlowConsumer:
            return
        finally:
            ctx.sse_streams.discard(follower.interrupt)
            follower.close()
            ctx.close_stream(key, "sse")

    stream = EventStreamResponse(frames(), follower.interrupt, follower.guarded_send)
    return stream  # type: ignore[return-value]


stream_routes = [
    WebSocketRoute("/api/jobs/{job_id}/ws", websocket_events),
    Route("/api/jobs/{job_id}/stream", sse_events, methods=["GET"]),
]
STREAM_PATH = re.compile(r"/api/jobs/(?P<job_id>[^/]+)/(?P<kind>ws|stream)")


class StreamRoutes:
    """Serves the two streaming routes above straight from the middleware stack.

    A stream's task stays suspended inside every layer it was dispatched through, for the
    stream's whole life: each wake-up resumes that whole chain of frames, and each layer
    keeps its own state (FastAPI's AsyncExitStack, Starlette's exception wrappers, the
    router).  py-spy showed those resumes on the per-event path (Starlette.__call__,
    Route.handle, ...).  Added as the innermost user middleware (before SecurityHeaders
    and anything else in ``create_app``), so every outer middleware still applies; only
    ExceptionMiddleware and routing are skipped, and errors are mapped to problem+json
    here the same way.  Other methods (HEAD, POST...) fall through to the routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = STREAM_PATH.fullmatch(scope["path"]) if scope["type"] != "lifespan" else None
        if match is not None:
            scope["path_params"] = {"job_id": match["job_id"]}
            if scope["type"] == "websocket" and match["kind"] == "ws":
                await websocket_events(WebSocket(scope, receive, send))
                return
            if scope["type"] == "http" and match["kind"] == "stream" and scope["method"] == "GET":
                request = Request(scope, receive)
                response: ASGIApp
                try:
                    response = await sse_events(request)
                except SafelightError as exc:
                    response = from_error(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
    changed, and parked long polls wake together on the job's next publish."""
    ctx = ctx_of(request)
    if Transport.POLL not in ctx.settings.transports:
        raise _disabled(Transport.POLL)
    ctx.metrics.polls.inc()
    try:
        answer = await ctx.polls.answer(job_id, after)
        if answer.empty and not answer.terminal and wait > 0:
            timeout = min(wait, ctx.settings.long_poll_max_s)
            if await ctx.polls.wait_for_change(answer, timeout):
                answer = await ctx.polls.answer(job_id, after)
    except CursorAhead as exc:
        return problem(400, exc.code, exc.title, exc.message, last_seq=exc.last_seq)
    headers = {"Cache-Control": "no-store", "ETag": answer.etag}
    if if_none_match is not None and answer.etag in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    for ev in answer.events:
        ctx.metrics.delivered("poll", ev)
    return Response(answer.body, media_type="application/json", headers=headers)
