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

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from safelight.api.access_log import Tally, log
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
        tally = Tally(scope)
        path = str(scope["path"])

        async def send_start(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                message = with_security_headers(message, path, API_CSP)
            tally.see(message)
            if kind in ("http.response.start", "websocket.http.response.start"):
                policy.saw_status(scope, tally.status)
            await send(message)

        scope[RAW_SEND] = send
        try:
            if kind == "ws":
                await websocket_events(scope, receive, send_start)
            else:
                await serve_http(scope, receive, send_start, kind)
        except BaseException:
            tally.failed()
            raise
        finally:
            if log.isEnabledFor(logging.INFO):
                tally.log()
