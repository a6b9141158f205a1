"""The ceiling: a bare uvicorn broadcast server (raw ASGI, no framework).

Same uvicorn options as ``safelight serve`` (wsproto, per-message deflate off, same ping
and size limits, no access log).  One registry of ``send`` callables per transport and ONE
loop that sends each message to every connection, which is the least work a Python
server can do to fan a message out.

    GET  /ws        WebSocket: welcome frame, then every broadcast message, then close 1000
    GET  /sse       SSE: ``event: welcome``, then ``id: <seq>`` + ``data: <json>``, then EOF
    POST /start?transport=ws|sse&count=N&interval=S&size=B   start one broadcast round
    GET  /healthz   200 when ready

Messages look like Safelight events (``job_id``, ``seq``, ``type``, ``attempt``, ``ts``,
``data``) padded to about ``size`` bytes; ``ts`` is stamped with the same millisecond
format just before the message is sent to the first connection.

Run: ``python -m benchmarks.bare_server --port 8123``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import uvicorn

from benchmarks.clients import raise_nofile

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BARE_ID = "bare-broadcast-00000000"  # 22 characters, like a Safelight job id
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def iso_ms(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def make_message(seq: int, count: int, size: int) -> str:
    ms = int(time.time() * 1000)
    body: dict[str, Any] = {
        "job_id": BARE_ID,
        "seq": seq,
        "type": "completed" if seq == count else "progress",
        "attempt": 1,
        "ts": iso_ms(ms),
        "data": {
            "step": seq,
            "total_steps": count,
            "fraction": round(seq / count, 4),
            "eta_s": 1.0,
        },
    }
    text = dumps(body)
    if len(text) < size - 9:  # room for ,"pad":""
        body["data"]["pad"] = "x" * (size - len(text) - 9)
        text = dumps(body)
    return text


def welcome(transport: str) -> str:
    return dumps(
        {
            "type": "welcome",
            "job_id": BARE_ID,
            "transport": transport,
            "last_seq": 0,
            "status": "running",
        }
    )


class BareBroadcast:
    def __init__(self) -> None:
        self.ws: dict[int, Send] = {}
        self.sse: dict[int, tuple[Send, asyncio.Future[None]]] = {}
        self.task: asyncio.Task[None] | None = None
        self._poll_wake: asyncio.Future[None] | None = None

    @property
    def poll_wake(self) -> asyncio.Future[None]:
        if self._poll_wake is None:
            self._poll_wake = asyncio.get_running_loop().create_future()
        return self._poll_wake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if kind == "websocket" and path == "/ws":
            await self.websocket(receive, send)
        elif kind == "http" and path == "/sse":
            await self.sse_stream(receive, send)
        elif kind == "http" and path == "/poll":
            await self.long_poll(scope, send)
        elif kind == "http" and path == "/start" and scope["method"] == "POST":
            query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
            self.task = asyncio.create_task(
                self.broadcast(
                    query.get("transport", "ws"),
                    int(query.get("count", "100")),
                    float(query.get("interval", "0.03")),
                    int(query.get("size", "200")),
                )
            )
            await self.respond(send, 202, {"ws": len(self.ws), "sse": len(self.sse)})
        elif kind == "http" and path == "/healthz":
            await self.respond(send, 200, {"ws": len(self.ws), "sse": len(self.sse)})
        elif kind == "http":
            await self.respond(send, 404, {"error": "not found"})

    @staticmethod
    async def respond(send: Send, status: int, body: dict[str, Any]) -> None:
        data = dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def websocket(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": welcome("ws")})
        key = id(send)
        self.ws[key] = send
        try:
            while True:  # reading notices the disconnect
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
        finally:
            self.ws.pop(key, None)

    async def sse_stream(self, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        first = f"event: welcome\ndata: {welcome('sse')}\nretry: 2000\n\n".encode()
        await send({"type": "http.response.body", "body": first, "more_body": True})
        key = id(send)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sse[key] = (send, done)

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.create_task(disconnected())
        try:
            await asyncio.wait({watcher, done}, return_when=asyncio.FIRST_COMPLETED)
            if done.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self.sse.pop(key, None)

    async def long_poll(self, scope: Scope, send: Send) -> None:
        """The memory floor of a parked long poll: ``wait>0`` holds the request (up to
        25 s, as the app's ``long_poll_max_s``) on one shared future, then answers an
        empty page in the app's shape.  Only for the idle-memory scenario."""
        query = parse_qs(scope["query_string"].decode())
        if float(query.get("wait", ["0"])[0]) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(25):
                    await asyncio.shield(self.poll_wake)
        after = int(query.get("after", ["0"])[0])
        await self.respond(send, 200, {"events": [], "last_seq": after, "terminal": False})

    async def broadcast(self, transport: str, count: int, interval: float, size: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq in range(1, count + 1):
            delay = start + (seq - 1) * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            text = make_message(seq, count, size)
            if transport == "ws":
                frame: Message = {"type": "websocket.send", "text": text}
                for key, ws_send in list(self.ws.items()):
                    try:
                        await ws_send(frame)
                    except Exception:
                        self.ws.pop(key, None)
            else:
                chunk: Message = {
                    "type": "http.response.body",
                    "body": f"id: {seq}\ndata: {text}\n\n".encode(),
                    "more_body": True,
                }
                for key, (sse_send, _) in list(self.sse.items()):
                    try:
                        await sse_send(chunk)
                    except Exception:
                        self.sse.pop(key, None)
        if transport == "ws":
            close: Message = {"type": "websocket.close", "code": 1000}
            for ws_send in list(self.ws.values()):
                try:
                    await ws_send(close)
                except Exception:  # noqa: S112 - already gone
                    continue
        else:
            for _, done in list(self.sse.values()):
                if not done.done():
                    done.set_result(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    raise_nofile()
    # Exactly the options of safelight.cli.serve (ping interval/timeout at their defaults).
    config = uvicorn.Config(
        BareBroadcast(),
        host=args.host,
        port=args.port,
        ws="wsproto",
        ws_per_message_deflate=False,
        ws_max_size=64 * 1024,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_graceful_shutdown=5,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
