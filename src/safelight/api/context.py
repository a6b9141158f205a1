"""Everything a request handler needs, built once by ``create_app``."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from safelight.api.security import RateLimiter
from safelight.blobs import BlobStore
from safelight.config import Settings
from safelight.errors import RateLimited
from safelight.jobs.service import JobService
from safelight.metrics import Metrics
from safelight.store.runner import AsyncStore
from safelight.streaming.broadcaster import Broadcaster
from safelight.streaming.follow import Stream
from safelight.streaming.polls import PollAnswers

if TYPE_CHECKING:
    from safelight.runtime import Runtime


@dataclass
class AppContext:
    settings: Settings
    store: AsyncStore
    blobs: BlobStore
    broadcaster: Broadcaster
    service: JobService
    metrics: Metrics
    limiter: RateLimiter
    polls: PollAnswers
    streams_per_client: Counter[str] = field(default_factory=Counter)
    shutting_down: bool = False
    runtime: Runtime | None = None  # its problems() make /readyz red
    # Open SSE streams: on shutdown they end cleanly (a complete body) so clients
    # reconnect at once, as WebSockets do on uvicorn's 1012.
    sse_streams: set[Stream] = field(default_factory=set)

    def begin_shutdown(self) -> None:
        """From the signal handler (on the loop's thread): refuse new work and end every
        SSE stream at its next turn."""
        self.shutting_down = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for stream in tuple(self.sse_streams):
            loop.call_soon_threadsafe(stream.stop)

    def client_key(self, conn: HTTPConnection) -> str:
        return conn.client.host if conn.client else "unknown"

    def open_stream(self, conn: HTTPConnection, transport: str) -> str:
        key = self.client_key(conn)
        if self.streams_per_client[key] >= self.settings.max_streams_per_client:
            raise RateLimited("too many open streams from this address", retry_after=2)
        self.streams_per_client[key] += 1
        self.metrics.streams.labels(transport).inc()
        return key

    def close_stream(self, key: str, transport: str) -> None:
        self.streams_per_client[key] -= 1
        if self.streams_per_client[key] <= 0:
            del self.streams_per_client[key]
        self.metrics.streams.labels(transport).dec()


def ctx_of(conn: HTTPConnection) -> AppContext:
    ctx: AppContext = conn.app.state.ctx
    return ctx
