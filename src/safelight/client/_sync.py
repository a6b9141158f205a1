"""A synchronous face on the async event stream: a private event loop on a thread.

``Client.events()`` returns a ``SyncEventStream``.  Each ``next()`` waits for one
``EventStream.__anext__`` on the loop thread.  A ``KeyboardInterrupt`` in the waiting
thread leaves that read running, so the caller can ask "cancel or detach?" and then keep
iterating without losing an event; ``close()`` ends it all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol, TypeVar

from safelight.client.models import Event, Job
from safelight.client.stream import EventStream, StreamSettings
from safelight.types import Transport

T = TypeVar("T")


class EventsClient(Protocol):
    """What the sync stream needs of a client: ``AsyncClient`` (tests pass a fake).  Typed
    by shape, so ``clients`` imports this module and never the reverse."""

    def events(
        self,
        job_id: str,
        *,
        after: int = 0,
        transport: Transport | str | None = None,
        settings: StreamSettings | None = None,
    ) -> EventStream: ...

    async def aclose(self) -> None: ...


class LoopThread:
    """An asyncio loop running forever on a daemon thread until ``stop()``."""

    def __init__(self, name: str = "safelight-events") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncEventStream:
    """Iterator of ``Event``; mirrors ``EventStream``'s status attributes."""

    def __init__(
        self,
        make_client: Callable[[], EventsClient],
        job_id: str,
        *,
        after: int,
        transport: Transport | str | None,
        settings: StreamSettings,
    ) -> None:
        self._thread = LoopThread()
        self._closed = False
        self._pending: concurrent.futures.Future[Event | None] | None = None

        async def setup() -> tuple[EventsClient, EventStream]:
            client = make_client()
            return client, client.events(
                job_id, after=after, transport=transport, settings=settings
            )

        try:
            self._client, self._stream = self._thread.run(setup())
        except BaseException:
            self._thread.stop()
            raise

    # Status, read across threads (plain attribute reads).
    @property
    def transport(self) -> Transport | None:
        return self._stream.transport

    @property
    def state(self) -> str:
        return self._stream.state

    @property
    def reason(self) -> str | None:
        return self._stream.reason

    @property
    def retry_at(self) -> float | None:
        return self._stream.retry_at

    @property
    def cursor(self) -> int:
        return self._stream.cursor

    @property
    def resets(self) -> int:
        return self._stream.resets

    @property
    def job(self) -> Job | None:
        return self._stream.job

    def __iter__(self) -> SyncEventStream:
        return self

    def __enter__(self) -> SyncEventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _next(self) -> Event | None:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            return None

    def __next__(self) -> Event:
        if self._closed:
            raise StopIteration
        if self._pending is None:
            self._pending = self._thread.submit(self._next())
        try:
            event = self._pending.result()
        except KeyboardInterrupt:
            raise  # the read goes on; calling next() again picks it up
        except BaseException:
            self._pending = None
            self.close()
            raise
        self._pending = None
        if event is None:
            self.close()
            raise StopIteration
        return event

    def close(self) -> None:
        """Stop reading and close every connection.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        try:
            self._thread.run(self._shutdown())
        finally:
            self._thread.stop()

    async def _shutdown(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._client.aclose()
