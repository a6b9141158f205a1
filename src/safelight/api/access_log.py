"""One log record per request (and per WebSocket, when it ends): method, path, status,
duration, client.  The query string is never logged (it is where secrets end up), nor any
body; the formatter escapes whatever the path holds (research S11)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("safelight.access")
PATH_MAX = 512


class Tally:
    """What a response has said so far, for its log record: the status (101 for an
    accepted WebSocket, 403 for one closed before the upgrade, as uvicorn answers) and
    the body bytes.  Shared by ``AccessLog`` and the stream gate (api/gate.py)."""

    __slots__ = ("scope", "sent", "started", "status")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.started = time.perf_counter()
        self.status = 0
        self.sent = 0

    def see(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("http.response.start", "websocket.http.response.start"):
            self.status = int(message["status"])
        elif kind == "http.response.body":
            self.sent += len(message.get("body", b""))
        elif kind == "websocket.accept":
            self.status = 101
        elif kind == "websocket.close" and not self.status:
            self.status = 403  # closed before the upgrade: uvicorn answers 403

    def failed(self) -> None:
        self.status = self.status or 500

    def log(self) -> None:
        log_request(self.scope, self.status, self.sent, self.started)


class AccessLog:
    """Pure ASGI middleware, outermost: it also sees the guard's refusals."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        tally = Tally(scope)

        async def watching_send(message: Message) -> None:
            tally.see(message)
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except BaseException:
            tally.failed()
            raise
        finally:
            tally.log()


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
