"""The stream gate: WebSocket, SSE and long-poll GETs served in front of the middleware
stack, with the same guard, headers and access log.

A stream's task stays suspended inside every layer it was dispatched through for the
stream's whole life, and every write goes down through each layer's ``send`` wrapper.
With FastAPI 0.165 / Starlette 1.10 that is eight layers (FastAPI, Starlette, the error,
telemetry and body-limit middlewares, our access log, security headers and guard):
about 3.5 KB of frames and closures per idle stream (tracemalloc) and eight coroutines
per event per client.  Here the guard's checks run first (a refusal goes down the normal
stack, which answers it exactly as for any route); the response start goes through one
wrapper that adds the security headers and records the status for the guard's miss
count and the access log; and the stream's events are written with the server's own
``send`` (``RAW_SEND`` in the scope).  The access log line of a stream therefore counts
only the bytes before its events (the headers, or a whole short answer).
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from safelight.api.access_log import log, log_request
from safelight.api.guard import GuardPolicy
from safelight.api.security import API_CSP, with_security_headers
from safelight.api.streams import RAW_SEND, serve_http, stream_kind, websocket_events


class SafelightApp(FastAPI):
    """FastAPI, with the stream gate in front (see the module docstring).  One method,
    so a WebSocket's life costs one frame here, not two."""

    gate: GuardPolicy | None = None  # set by create_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.gate
        kind = stream_kind(scope) if policy is not None and scope["type"] != "lifespan" else None
        if policy is None or kind is None or policy.check(scope) is not None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        started = time.perf_counter()
        status = 0
        sent = 0
        path = str(scope["path"])

        async def send_start(message: Message) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.start":
                message = with_security_headers(message, path, API_CSP)
                status = int(message["status"])
                policy.saw_status(scope, status)
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "websocket.http.response.start":
                status = int(message["status"])
                policy.saw_status(scope, status)
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and not status:
                status = 403  # closed before the upgrade: uvicorn answers 403
            await send(message)

        scope[RAW_SEND] = send
        try:
            if kind == "ws":
                await websocket_events(scope, receive, send_start)
            else:
                await serve_http(scope, receive, send_start, kind)
        except BaseException:
            status = status or 500
            raise
        finally:
            if log.isEnabledFor(logging.INFO):
                log_request(scope, status, sent, started)
