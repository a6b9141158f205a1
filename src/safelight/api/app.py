"""``create_app(settings)``: the HTTP face of a ``Runtime``.  No work at import time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from safelight import __version__
from safelight.api import jobs as job_routes
from safelight.api import pages, problems, streams
from safelight.api.context import AppContext
from safelight.api.security import RateLimiter, SecurityHeaders
from safelight.config import Settings
from safelight.runtime import Runtime
from safelight.streaming.polls import PollAnswers


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.build(settings)
        ctx = AppContext(
            settings=settings,
            store=runtime.store,
            blobs=runtime.blobs,
            broadcaster=runtime.broadcaster,
            service=runtime.service,
            metrics=runtime.metrics,
            limiter=RateLimiter(settings.create_rate_per_min),
            polls=PollAnswers(runtime.store, settings.poll_after_ms, settings.poll_cache_ttl_s),
        )
        runtime.broadcaster.on_publish.append(ctx.polls.published)
        app.state.ctx = ctx
        await runtime.start()
        try:
            yield
        finally:
            ctx.shutting_down = True
            await runtime.stop()
            runtime.broadcaster.close()

    app = FastAPI(
        title="Safelight",
        version=__version__,
        description="Watch long-running image generations develop live. See docs/API.md.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(job_routes.router)
    app.include_router(streams.router)
    app.router.routes.extend(streams.stream_routes)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(streams.StreamRoutes)  # first: the innermost middleware
    app.add_middleware(SecurityHeaders)
    return app
