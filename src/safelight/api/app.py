"""``create_app(settings)``: the HTTP face of a ``Runtime``.  No work at import time."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from safelight import __version__
from safelight.api import docs, lineage, pages, problems, streams
from safelight.api import jobs as job_routes
from safelight.api.access_log import AccessLog
from safelight.api.context import AppContext
from safelight.api.gate import SafelightApp
from safelight.api.guard import GuardPolicy, RequestGuard
from safelight.api.security import RateLimiter, SecurityHeaders
from safelight.config import Settings
from safelight.runtime import Runtime
from safelight.streaming.polls import PollAnswers


def _stop_process() -> None:
    """A background loop died: shut the server down gracefully (uvicorn's SIGTERM path);
    ``safelight serve`` then exits nonzero because ``runtime.crashed`` is set."""
    os.kill(os.getpid(), signal.SIGTERM)


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
            polls=PollAnswers(
                runtime.store,
                settings.poll_after_ms,
                settings.poll_cache_ttl_s,
                settings.long_poll_coalesce_ms / 1000,
            ),
        )
        ctx.runtime = runtime
        runtime.broadcaster.on_publish.append(ctx.polls.published)
        app.state.ctx = ctx
        app.state.runtime = runtime  # cli: begin_drain() on SIGTERM, exit status on crash
        runtime.on_crash = _stop_process
        await runtime.start()
        try:
            yield
        finally:
            ctx.shutting_down = True
            await runtime.stop()
            runtime.broadcaster.close()

    app = SafelightApp(
        title="Safelight",
        version=__version__,
        description="Watch long-running image generations develop live. See docs/API.md.",
        lifespan=lifespan,
        # Our own offline page (api/docs.py) instead of FastAPI's CDN one; no ReDoc.
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    app.include_router(job_routes.router)
    app.include_router(lineage.router)
    app.include_router(streams.router)
    app.router.routes.extend(streams.stream_routes)
    app.include_router(pages.router)
    app.include_router(docs.router)
    app.mount(docs.ASSETS_PREFIX, docs.assets_app(), name="docs-assets")
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR, check_dir=False), name="static")
    # Innermost first: the guard (Host, fetch metadata, misses) runs before any route;
    # SecurityHeaders covers the guard's refusals; AccessLog, outermost, sees everything.
    # Streams and long polls are served by the gate in front of all of it (api/gate.py),
    # which applies the same policy, headers and log.
    policy = GuardPolicy(settings)
    app.add_middleware(RequestGuard, policy=policy)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(AccessLog)
    app.gate = policy
    return app
