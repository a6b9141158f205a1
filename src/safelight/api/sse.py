"""SSE framing for the lean ``text/event-stream`` response (api/streams.py).

It replaced sse-starlette's ``EventSourceResponse``, whose per-connection anyio task group
(four tasks), cancel scope per chunk and ``ServerSentEvent`` object per frame cost about
as much as the rest of the stream put together (docs/benchmarks.md, "What changed in
issue 11").  Frames are built once per event and shared by every client.

Frames (API.md "Server-Sent Events"; event JSON never holds a raw CR or LF, so one
``data:`` line each, research/reliability-anchors.md 3.9):

    event: welcome\\ndata: {...}\\nretry: <ms>\\n\\n     first
    id: <seq>\\ndata: {event JSON}\\n\\n              one per event
    event: ping\\ndata: {"type":"ping",...}\\n\\n      when nothing else was sent
"""

from __future__ import annotations

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def control_frame(event: str, data: str, retry_ms: int | None = None) -> bytes:
    retry = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"event: {event}\ndata: {data}\n{retry}\n".encode()


def event_frame(seq: int, data: str) -> bytes:
    return f"id: {seq}\ndata: {data}\n\n".encode()
