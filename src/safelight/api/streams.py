"""The three transports over one cursor (API.md "Three transports, one cursor").

WebSocket and SSE share ``Follower`` (subscribe, backlog, live, dedupe, backfill, end after
the terminal event); polling reads the store directly and long-polls on a subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, WebSocket
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from safelight.api.context import AppContext, ctx_of
from safelight.api.jobs import JOB_ID
from safelight.api.problems import from_error, problem
from safelight.api.security import check_origin
from safelight.errors import NotFound, SafelightError
from safelight.models import Event
from safelight.store.sql import SqlStore
from safelight.streaming.follow import Control, Follower, SlowConsumer
from safelight.types import Transport

router = APIRouter()
POLL_PAGE = 500


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
        ctx.settings.ping_interval_s,
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


websocket_routes = [WebSocketRoute("/api/jobs/{job_id}/ws", websocket_events)]


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
    send_timeout = ctx.settings.send_timeout_s
    try:
        try:
            await websocket.send_text(welcome.json)
        except RuntimeError:
            # The client left between its upgrade request and our accept: uvicorn's
            # wsproto skips an accept on a closing transport, so this first send is
            # refused as out of order.  Nothing to deliver (found by chaos R9).
            return
        async for item in follower.events():
            async with asyncio.timeout(send_timeout):  # no task per send, unlike wait_for
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


@router.get(
    "/api/jobs/{job_id}/stream",
    summary="Server-Sent Events from a cursor",
    tags=["events"],
    response_class=Response,
)
async def sse_events(
    request: Request,
    job_id: JOB_ID,
    after: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    ctx = ctx_of(request)
    if Transport.SSE not in ctx.settings.transports:
        raise _disabled(Transport.SSE)
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            return problem(
                400,
                "bad_cursor",
                "Bad Last-Event-ID",
                "Last-Event-ID must be a non-negative integer seq",
            )
        after = int(last_event_id.strip())
    follower = Follower(
        ctx.store, ctx.broadcaster, job_id, after, Transport.SSE, ctx.settings.ping_interval_s
    )
    try:
        welcome = await follower.open()
    except SafelightError:
        follower.close()
        raise
    if follower.done:
        follower.close()
        return Response(status_code=204)
    key = ctx.open_stream(request, "sse")
    retry_ms = random.randint(ctx.settings.sse_retry_min_ms, ctx.settings.sse_retry_max_ms)

    async def frames() -> AsyncIterator[ServerSentEvent | bytes]:
        try:
            yield ServerSentEvent(welcome.json, event="welcome", retry=retry_ms)
            async for item in follower.events():
                if isinstance(item, Control):
                    yield ServerSentEvent(item.json, event=item.type)
                else:
                    # The same bytes ServerSentEvent would make (sep "\n"; event JSON never
                    # holds CR/LF), without building an object per frame per subscriber.
                    yield f"id: {item.seq}\ndata: {item.json}\n\n".encode()
                    ctx.metrics.delivered("sse", item)
        except SlowConsumer:
            return
        finally:
            follower.close()
            ctx.close_stream(key, "sse")

    return EventSourceResponse(
        frames(),
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
        ping=0,  # no sse-starlette ping task: Follower sends our own `event: ping`
        send_timeout=ctx.settings.send_timeout_s,
        sep="\n",
    )


@router.get(
    "/api/jobs/{job_id}/events", summary="Poll events from a cursor (long poll)", tags=["events"]
)
async def poll_events(
    request: Request,
    job_id: JOB_ID,
    after: Annotated[int, Query(ge=0)] = 0,
    wait: Annotated[float, Query(ge=0, le=25)] = 0,
) -> Response:
    ctx = ctx_of(request)
    if Transport.POLL not in ctx.settings.transports:
        raise _disabled(Transport.POLL)
    ctx.metrics.polls.inc()
    sub = ctx.broadcaster.subscribe(job_id) if wait > 0 else None
    try:
        job = await ctx.service.get(job_id)
        if after > job.last_seq:
            return problem(
                400,
                "cursor_ahead",
                "Cursor beyond the job's last event",
                f"after={after} but the job's last_seq is {job.last_seq}; re-read the job",
                last_seq=job.last_seq,
            )
        events = await ctx.store.read(SqlStore.read_events, job_id, after, POLL_PAGE)
        if not events and sub is not None and not job.terminal:
            deadline = asyncio.get_running_loop().time() + min(wait, ctx.settings.long_poll_max_s)
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(sub.queue.get(), remaining)
                except TimeoutError:
                    break
                if ev.seq > after:
                    break
            events = await ctx.store.read(SqlStore.read_events, job_id, after, POLL_PAGE)
        # Re-read the job after the events so that last_seq covers them all.
        job = await ctx.service.get(job_id)
    finally:
        if sub is not None:
            ctx.broadcaster.unsubscribe(sub)
    last = events[-1].seq if events else after
    last_seq = job.last_seq
    terminal = job.terminal and last >= last_seq
    for ev in events:
        ctx.metrics.delivered("poll", ev)
    body = {
        "events": [ev.to_dict() for ev in events],
        "last_seq": last_seq,
        "status": job.status.value,
        "terminal": terminal,
        "poll_after_ms": 0 if len(events) == POLL_PAGE else ctx.settings.poll_after_ms,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
