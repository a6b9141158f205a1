"""``create_app(settings)``: builds every part, wires them, and runs the workers and the
reaper for the app's lifetime.  No work happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from safelight import __version__
from safelight.api import jobs as job_routes
from safelight.api import pages, problems, streams
from safelight.api.context import AppContext
from safelight.api.metrics import Metrics
from safelight.api.security import RateLimiter, SecurityHeaders
from safelight.blobs import BlobStore
from safelight.config import Settings
from safelight.jobs.service import JobService
from safelight.jobs.worker import Worker
from safelight.providers import create_provider
from safelight.providers.base import Provider
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.streaming.broadcaster import Broadcaster

log = logging.getLogger("safelight")


def build_context(settings: Settings) -> AppContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    blobs = BlobStore(settings.blob_dir, settings.min_free_bytes)
    blobs.ensure_ready()
    url = settings.database_url or f"sqlite:///{settings.sqlite_path}"
    store = AsyncStore(SqlStore(url))
    providers: dict[str, Provider] = {
        name: create_provider(name, settings) for name in settings.providers
    }
    metrics = Metrics()
    broadcaster = Broadcaster(settings.stream_queue_size)
    service = JobService(settings, store, broadcaster, providers, metrics)
    return AppContext(
        settings=settings,
        store=store,
        blobs=blobs,
        broadcaster=broadcaster,
        service=service,
        metrics=metrics,
        limiter=RateLimiter(settings.create_rate_per_min),
    )


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = build_context(settings)
        app.state.ctx = ctx
        tasks: list[asyncio.Task[None]] = []
        threads = ThreadPoolExecutor(
            max(2, settings.concurrency * 3), thread_name_prefix="safelight-gen"
        )
        if settings.run_workers and settings.concurrency > 0:
            # Embedded mode: this process owns the data directory (see cli.serve's lock),
            # so any job still marked running was left by a process that died.
            if settings.database_url is None:
                await ctx.service.reap(everything=True)
            for n in range(settings.concurrency):
                worker = Worker(ctx.service, ctx.blobs, f"embedded-{n + 1}", threads)
                tasks.append(asyncio.create_task(worker.run(), name=f"worker-{n + 1}"))
            tasks.append(asyncio.create_task(_reaper(ctx), name="reaper"))
        try:
            yield
        finally:
            ctx.shutting_down = True
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            ctx.service.stopping.set()
            for provider in ctx.service.providers.values():
                provider.close()
            threads.shutdown(wait=False, cancel_futures=True)
            ctx.store.close()

    app = FastAPI(
        title="Safelight",
        version=__version__,
        description="Watch long-running image generations develop live. See API.md.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(job_routes.router)
    app.include_router(streams.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(SecurityHeaders)
    return app


async def _reaper(ctx: AppContext) -> None:
    while True:
        await asyncio.sleep(ctx.settings.reaper_interval_s)
        try:
            await ctx.service.reap()
        except Exception:
            log.exception("reaper pass failed")
