"""A node's moving parts: store, blobs, providers, fan-out, workers, reaper, listener.

``safelight serve`` wraps a ``Runtime`` in the HTTP app; ``safelight worker`` (scale-out)
runs one without HTTP.  Embedded mode (SQLite) fans events out in process; with a
PostgreSQL ``database_url`` every node listens for NOTIFY instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safelight.blobs import BlobStore
from safelight.config import Settings
from safelight.jobs.service import JobService
from safelight.jobs.worker import Worker
from safelight.metrics import Metrics
from safelight.providers import create_provider
from safelight.providers.base import Provider
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.streaming.broadcaster import Broadcaster

if TYPE_CHECKING:
    from safelight.streaming.pg_listener import PgListener

log = logging.getLogger("safelight")


@dataclass
class Runtime:
    settings: Settings
    store: AsyncStore
    blobs: BlobStore
    broadcaster: Broadcaster
    service: JobService
    metrics: Metrics
    listener: PgListener | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    threads: ThreadPoolExecutor | None = None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        blobs = BlobStore(settings.blob_dir, settings.min_free_bytes)
        blobs.ensure_ready()
        url = settings.database_url or f"sqlite:///{settings.sqlite_path}"
        store = AsyncStore(SqlStore(url))
        providers: dict[str, Provider] = {
            name: create_provider(name, settings) for name in settings.providers
        }
        metrics = Metrics()
        broadcaster = Broadcaster(
            settings.stream_queue_size, settings.ping_interval_s, settings.send_timeout_s
        )
        service = JobService(settings, store, broadcaster, providers, metrics)
        listener = None
        if settings.database_url is not None:
            # Only scale-out needs psycopg (the postgres extra); embedded never imports it.
            from safelight.streaming.pg_listener import PgListener

            listener = PgListener(settings.database_url, store, broadcaster, service.deliver)
        return cls(settings, store, blobs, broadcaster, service, metrics, listener)

    @property
    def embedded(self) -> bool:
        return self.settings.database_url is None

    async def start(self) -> None:
        s = self.settings
        if self.listener is not None:
            self.tasks.append(asyncio.create_task(self.listener.run(), name="listener"))
        if not (s.run_workers and s.concurrency > 0):
            return
        for provider in self.service.providers.values():
            # Warm up (e.g. load a model) now, so the first job's stall clock does not
            # count the load.  Non-blocking; optional in the Provider protocol.
            start = getattr(provider, "start", None)
            if callable(start):
                start()
        if self.embedded:
            # This process owns the data directory (cli's lock), so any job still marked
            # running was left by a process that died: requeue it now, not after a lease.
            await self.service.reap(everything=True)
        self.threads = ThreadPoolExecutor(
            max(2, s.concurrency * 3), thread_name_prefix="safelight-gen"
        )
        for n in range(s.concurrency):
            worker = Worker(self.service, self.blobs, f"{s.node_name}-{n + 1}", self.threads)
            self.tasks.append(asyncio.create_task(worker.run(), name=f"worker-{n + 1}"))
        self.tasks.append(asyncio.create_task(self._reaper(), name="reaper"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.service.stopping.set()
        for provider in self.service.providers.values():
            provider.close()
        if self.threads is not None:
            self.threads.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_s)
            try:
                await self.service.reap()
            except Exception:
                log.exception("reaper pass failed")
