"""A node's moving parts: store, blobs, providers, fan-out, workers, reaper, listener.

``safelight serve`` wraps a ``Runtime`` in the HTTP app; ``safelight worker`` (scale-out)
runs one without HTTP.  Embedded mode (SQLite) fans events out in process; with a
PostgreSQL ``database_url`` every node listens for NOTIFY instead.

Supervision: the background loops (worker slots, reaper, listener) are written to survive
any store error with backoff.  If one ends anyway, that is a bug: it is logged with its
exception, ``crashed`` records it, ``problems()`` (hence /readyz) reports it, and
``on_crash`` stops the process with a nonzero status so a supervisor restarts it.

Shutdown: ``begin_drain()`` (from the signal handler) makes the slots stop claiming and
the providers stop at their next step; ``stop()`` then waits up to ``shutdown_grace_s``
for each slot to hand its job back before cancelling what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safelight import extras
from safelight.blobs import BlobStore, create_blob_store
from safelight.config import Settings
from safelight.jobs.service import JobService
from safelight.jobs.worker import Worker
from safelight.metrics import Metrics
from safelight.providers import create_provider
from safelight.providers.base import Provider
from safelight.retry import Backoff
from safelight.store import webhooks as webhook_rows
from safelight.store.migrate import SchemaPolicy
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.streaming.broadcaster import Broadcaster
from safelight.webhooks.dispatcher import Dispatcher
from safelight.webhooks.signing import load_or_create_secret

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
    dispatcher: Dispatcher | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    threads: ThreadPoolExecutor | None = None
    workers: list[Worker] = field(default_factory=list)
    # (task name, what ended it) for every background loop that ended unexpectedly.
    crashed: list[tuple[str, BaseException | None]] = field(default_factory=list)
    # Called once when a loop dies: the command stops the process (nonzero exit).
    on_crash: Callable[[], None] | None = None
    draining: bool = False
    _worker_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        extras.check(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        blobs = create_blob_store(settings)
        blobs.ensure_ready()
        url = settings.database_url or f"sqlite:///{settings.sqlite_path}"
        # Embedded owns its database and upgrades it; scale-out nodes only create the
        # schema in an empty database (store/migrate.py; docs/operations.md).
        policy = SchemaPolicy.INIT if settings.database_url else SchemaPolicy.UPGRADE
        store = AsyncStore(SqlStore(url, policy, idle_tx_timeout_s=settings.db_idle_tx_timeout_s))
        providers: dict[str, Provider] = {
            name: create_provider(name, settings) for name in settings.providers
        }
        metrics = Metrics()
        broadcaster = Broadcaster(
            settings.stream_queue_size,
            settings.ping_interval_s,
            settings.send_timeout_s,
            end_delay_s=settings.stream_end_delay_ms / 1000,
        )
        broadcaster.on_delivered = lambda wire, event, count: metrics.delivered(
            wire.transport.value, event, count
        )
        service = JobService(settings, store, broadcaster, providers, metrics)
        listener = None
        if settings.database_url is not None:
            # Only scale-out needs psycopg (the postgres extra); embedded never imports it.
            from safelight.streaming.pg_listener import PgListener

            listener = PgListener(
                settings.database_url,
                store,
                broadcaster,
                service.deliver,
                retry=Backoff(settings.store_retry_initial_s, settings.store_retry_max_s),
                probe_s=settings.listener_probe_s,
                # NOTIFYs sent while disconnected are gone: idle slots look for work.
                on_reconnect=service.work_available.set,
            )
        dispatcher = None
        if settings.webhook_dispatch:
            secret = load_or_create_secret(settings.webhook_secret, settings.data_dir)
            dispatcher = Dispatcher(settings, store, metrics, secret, f"{settings.node_name}-wh")
            service.listeners.append(dispatcher.notice)
        return cls(settings, store, blobs, broadcaster, service, metrics, listener, dispatcher)

    @property
    def embedded(self) -> bool:
        return self.settings.database_url is None

    async def start(self) -> None:
        s = self.settings
        if self.listener is not None:
            self._spawn(self.listener.run(), "listener")
        if self.dispatcher is not None:
            if self.embedded:
                # Same reasoning as the job reaper below: nobody else can hold a claim.
                await self.store.write(webhook_rows.release_leases)
            self._spawn(self.dispatcher.run(), "webhooks")
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
            self.workers.append(worker)
            self._worker_tasks.append(self._spawn(worker.run(), f"worker-{n + 1}"))
        self._spawn(self._reaper(), "reaper")

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        task.add_done_callback(self._task_done)
        self.tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (self.draining and task.exception() is None):
            return  # stopped on purpose
        exc = task.exception()
        self.crashed.append((task.get_name(), exc))
        log.critical(
            "background task %s ended unexpectedly; stopping this node",
            task.get_name(),
            exc_info=exc,
        )
        if self.on_crash is not None and len(self.crashed) == 1:
            self.on_crash()

    def problems(self) -> list[str]:
        """Why this node cannot claim or deliver right now (empty: ready)."""
        out = [f"background task {name} died" for name, _ in self.crashed]
        if self.draining:
            out.append("shutting down")
        if self.listener is not None and not self.listener.connected.is_set():
            out.append("not listening for events (database connection lost)")
        if any(not w.can_claim for w in self.workers):
            out.append("worker slots cannot claim jobs (database unavailable)")
        return out

    def begin_drain(self) -> None:
        """Stop claiming; providers stop at their next step.  Safe from a signal handler
        on the loop's thread (touches only thread-safe flags and schedules the wake-up)."""
        if self.draining:
            return
        self.draining = True
        self.service.stopping.set()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(self.service.work_available.set)

    async def stop(self) -> None:
        self.begin_drain()
        self.service.work_available.set()
        if self._worker_tasks:
            # Each slot hands its job back at the provider's next step (or after
            # shutdown_grace_s); give them that long plus a little for the write.
            _, pending = await asyncio.wait(
                self._worker_tasks, timeout=self.settings.shutdown_grace_s + 2
            )
            if pending:
                log.warning("%d worker slot(s) did not stop in time", len(pending))
        for task in self.tasks:
            task.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for task, result in zip(self.tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                # Already logged by _task_done when it happened; say it again at exit so
                # a crash is never silent (it also decides the exit status).
                if not any(name == task.get_name() for name, _ in self.crashed):
                    self.crashed.append((task.get_name(), result))
                log.error("background task %s had failed: %r", task.get_name(), result)
        for provider in self.service.providers.values():
            provider.close()
        if self.threads is not None:
            self.threads.shutdown(wait=False, cancel_futures=True)
        self.store.close()
        self.blobs.close()

    async def _reaper(self) -> None:
        backoff = Backoff(self.settings.store_retry_initial_s, self.settings.store_retry_max_s)
        delay = self.settings.reaper_interval_s
        while True:
            await asyncio.sleep(delay)
            try:
                await self.service.reap()
            except Exception as exc:
                delay = max(self.settings.reaper_interval_s, backoff.next())
                log.warning("reaper pass failed (%s); next in %.2f s", exc, delay)
            else:
                backoff.reset()
                delay = self.settings.reaper_interval_s
