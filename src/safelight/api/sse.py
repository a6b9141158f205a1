"""A lean ``text/event-stream`` response: SSE framing and one raw ASGI streaming loop.

It replaces sse-starlette's ``EventSourceResponse``, whose per-connection anyio task group
(four tasks), cancel scope per chunk and ``ServerSentEvent`` object per frame cost about
as much as the rest of the stream put together (docs/benchmarks.md, "Where the time goes").
Here a stream is the request's own task, which writes pre-encoded frames, plus one small
task that waits for the client's ``http.disconnect``: uvicorn silently drops writes to a
vanished HTTP client, so without it a disconnect would go unnoticed until the job ends.

Frames (API.md "Server-Sent Events"; event JSON never holds a raw CR or LF, so one
``data:`` line each, research/reliability-anchors.md 3.9):

    event: welcome\\ndata: {...}\\nretry: <ms>\\n\\n     first
    id: <seq>\\ndata: {event JSON}\\n\\n              one per event
    event: ping\\ndata: {"type":"ping",...}\\n\\n      when nothing else was sent
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractContextManager

from starlette.types import Message, Receive, Scope, Send

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def control_frame(event: str, data: str, retry_ms: int | None = None) -> bytes:
    retry = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"event: {event}\ndata: {data}\n{retry}\n".encode()


def event_frame(seq: int, data: str) -> bytes:
    return f"id: {seq}\ndata: {data}\n\n".encode()


class EventStreamResponse:
    """Streams ``frames`` (bytes) as one SSE body.  ``on_disconnect`` runs when the client
    goes away, so the producer can stop; each write runs inside ``guard()``, which raises
    TimeoutError for a write that did not finish in time (a stalled reader): that ends the
    stream and the client resumes by cursor."""

    __slots__ = ("frames", "guard", "on_disconnect")

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        on_disconnect: Callable[[], None],
        guard: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self.frames = frames
        self.on_disconnect = on_disconnect
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.get_running_loop().create_task(self._watch(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            async for frame in self.frames:
                chunk: Message = {"type": "http.response.body", "body": frame, "more_body": True}
                with self.guard():
                    await send(chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            # A stalled reader: uvicorn closes a response that did not complete.
            return
        finally:
            watcher.cancel()
            with contextlib.suppress(Exception):
                await self.frames.aclose()  # runs the producer's cleanup (unsubscribe)

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.on_disconnect()
