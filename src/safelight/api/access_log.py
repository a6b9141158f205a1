"""One log record per request (and per WebSocket, when it ends): method, path, status,
duration, client.  The query string is never logged (it is where secrets end up), nor any
body; the formatter escapes whatever the path holds (research S11)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("safelight.access")
PATH_MAX = 512


class AccessLog:
    """Pure ASGI middleware, outermost: it also sees the guard's refusals."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0

        async def watching_send(message: Message) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = int(message["status"])
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and not status:
                status = 403  # closed before the upgrade: uvicorn answers 403
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except BaseException:
            status = status or 500
            raise
        finally:
            log_request(scope, status, sent, started)


def log_request(scope: Scope, status: int, sent: int, started: float) -> None:
    client = scope.get("client")
    log.info(
        "request",
        extra={
            "method": scope.get("method", "GET") if scope["type"] == "http" else "WS",
            "path": str(scope["path"])[:PATH_MAX],
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "bytes": sent,
            "client": client[0] if client else None,
        },
    )
