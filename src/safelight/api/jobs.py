"""JSON routes: create, get, cancel, retry, images, previews, options, health, metrics."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from safelight.api.context import AppContext, ctx_of
from safelight.api.schemas import options_view, validate_create
from safelight.api.security import check_origin
from safelight.api.webhooks import WEBHOOK_BODY_SCHEMA, check_webhook_url, webhook_view
from safelight.blobs import image_name, preview_name
from safelight.errors import (
    Conflict,
    NotFound,
    SafelightError,
    StorageUnavailable,
    Unavailable,
    ValidationFailed,
)
from safelight.jobs.service import job_view
from safelight.models import JobRecord, dumps
from safelight.store import webhooks as webhook_rows
from safelight.store.sql import SqlStore
from safelight.types import JobStatus

MAX_BODY = 64 * 1024
JOB_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

router = APIRouter()


class PayloadTooLarge(SafelightError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class UnsupportedMediaType(SafelightError):
    status = 415
    code = "unsupported_media_type"
    title = "The request body must be application/json"


async def read_json(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise PayloadTooLarge(f"the body must be at most {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"the body must be at most {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValidationFailed([{"field": "body", "message": "is not valid JSON"}]) from exc


def guard_origin(request: Request, ctx: AppContext) -> None:
    check_origin(
        request.headers.get("origin"),
        request.url.scheme,
        request.headers.get("host"),
        ctx.settings.allowed_origins,
    )


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


async def render(ctx: AppContext, job: JobRecord) -> dict[str, Any]:
    position = await ctx.service.queue_position(job)
    eta = ctx.service.eta(position) if position is not None else None
    view = job_view(job, position, eta)
    webhook = await ctx.store.read(webhook_rows.get_webhook, job.id)
    view["webhook"] = webhook_view(webhook)
    view["links"]["family"] = f"/api/jobs/{job.id}/family"
    view["links"]["webhook_deliveries"] = f"/api/jobs/{job.id}/webhook-deliveries"
    return view


def job_response(view: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(view, status_code=status, headers={"Cache-Control": "no-store"})


CREATE_BODY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": "\\S"},
        "negative_prompt": {"type": "string", "maxLength": 2000},
        "width": {"type": "integer", "minimum": 64, "maximum": 2048, "multipleOf": 8},
        "height": {"type": "integer", "minimum": 64, "maximum": 2048, "multipleOf": 8},
        "steps": {"type": "integer", "minimum": 1, "maximum": 150},
        "style": {"type": "string", "description": "one of GET /api/options styles"},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967295},
        "num_images": {"type": "integer", "minimum": 1, "maximum": 4},
        "provider": {"type": ["string", "null"]},
        "parent_id": {"type": ["string", "null"]},
        "webhook": WEBHOOK_BODY_SCHEMA,
    },
}


@router.post(
    "/api/jobs",
    status_code=201,
    summary="Create a job",
    tags=["jobs"],
    openapi_extra={
        # The body is read and validated by hand (per-field messages, 64 KiB cap, 415),
        # so describe it here for /docs and schema-driven fuzzing.
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CREATE_BODY_SCHEMA}},
        },
        "responses": {
            "201": {"description": "Created: the job plus its manage_token"},
            "422": {"description": "Validation failed (problem+json with errors[])"},
            "413": {"description": "Body over 64 KiB"},
            "415": {"description": "Not application/json"},
            "429": {"description": "Too many requests (Retry-After)"},
            "503": {"description": "Cannot accept work now (Retry-After)"},
        },
    },
)
async def create_job(
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    ctx = ctx_of(request)
    guard_origin(request, ctx)
    if ctx.shutting_down:
        raise Unavailable("the server is shutting down", code="shutting_down", retry_after=5)
    body = await read_json(request)
    if idempotency_key is not None and not (
        1 <= len(idempotency_key) <= 255 and all(33 <= ord(c) <= 126 for c in idempotency_key)
    ):
        raise ValidationFailed(
            [{"field": "Idempotency-Key", "message": "must be 1..255 printable ASCII characters"}]
        )
    ctx.limiter.hit(ctx.client_key(request))
    infos = {name: p.info for name, p in ctx.service.providers.items()}
    spec = validate_create(body, infos, ctx.settings.provider)
    if spec.webhook is not None:
        await check_webhook_url(ctx, spec.webhook[0])
    if not ctx.blobs.has_room():
        raise StorageUnavailable("the server's disk is nearly full", retry_after=60)
    key_hash = hashlib.sha256(dumps({"b": body}).encode()).hexdigest()
    if idempotency_key is not None:
        stored = await ctx.store.write(
            SqlStore.idem_begin,
            idempotency_key,
            key_hash,
            int(ctx.settings.idempotency_ttl_s * 1000),
        )
        if stored is not None:
            status, text = stored
            view = json.loads(text)
            return JSONResponse(
                view,
                status_code=status,
                headers={"Location": f"/api/jobs/{view['id']}", "Idempotent-Replayed": "true"},
            )
    try:
        job, token = await ctx.service.create(spec.settings, spec.parent_id, spec.webhook)
    except BaseException:
        if idempotency_key is not None:
            await ctx.store.write(SqlStore.idem_release, idempotency_key)
        raise
    view = {**await render(ctx, job), "manage_token": token}
    if idempotency_key is not None:
        await ctx.store.write(SqlStore.idem_finish, idempotency_key, 201, dumps(view))
    return JSONResponse(view, status_code=201, headers={"Location": f"/api/jobs/{job.id}"})


@router.get("/api/jobs/{job_id}", summary="Get a job", tags=["jobs"])
async def get_job(request: Request, job_id: JOB_ID) -> Response:
    ctx = ctx_of(request)
    return job_response(await render(ctx, await ctx.service.get(job_id)))


@router.post("/api/jobs/{job_id}/cancel", summary="Cancel a job", tags=["jobs"])
async def cancel_job(
    request: Request,
    job_id: JOB_ID,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    ctx = ctx_of(request)
    guard_origin(request, ctx)
    job, status = await ctx.service.cancel(job_id, bearer(authorization))
    return job_response(await render(ctx, job), status)


@router.post(
    "/api/jobs/{job_id}/retry", status_code=202, summary="Retry a failed job", tags=["jobs"]
)
async def retry_job(
    request: Request,
    job_id: JOB_ID,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    ctx = ctx_of(request)
    guard_origin(request, ctx)
    job = await ctx.service.retry(job_id, bearer(authorization))
    return job_response(await render(ctx, job), 202)


IMMUTABLE = "public, max-age=31536000, immutable"


async def blob_response(
    ctx: AppContext,
    name: str,
    media_type: str,
    missing: str,
    download: tuple[str, str] | None = None,
) -> Response:
    """Stream a blob from whichever store holds it: a local file by sendfile, a remote
    blob chunk by chunk (read in the thread pool, never whole in memory).  Names are
    attempt-scoped and never rewritten, so the response is immutable."""
    blob = await run_in_threadpool(ctx.blobs.open, name)
    if blob is None:
        raise NotFound(missing)
    headers = {"Cache-Control": IMMUTABLE}
    if blob.path is not None:
        blob.close()
        if download is None:
            return FileResponse(blob.path, media_type=media_type, headers=headers)
        return FileResponse(
            blob.path,
            media_type=media_type,
            headers=headers,
            content_disposition_type=download[0],
            filename=download[1],
        )
    headers["Content-Length"] = str(blob.size)
    headers["ETag"] = f'"{hashlib.sha256(name.encode()).hexdigest()[:32]}"'
    if download is not None:
        headers["Content-Disposition"] = f'{download[0]}; filename="{download[1]}"'
    return StreamingResponse(
        blob.chunks, media_type=media_type, headers=headers, background=BackgroundTask(blob.close)
    )


@router.get("/api/jobs/{job_id}/images/{index}", summary="A final image (PNG)", tags=["images"])
async def get_image(
    request: Request,
    job_id: JOB_ID,
    index: Annotated[int, Path(ge=0, le=16)],
    download: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    ctx = ctx_of(request)
    job = await ctx.service.get(job_id)
    if job.status is not JobStatus.COMPLETED or index >= len(job.images):
        raise NotFound(f"job {job_id} has no image {index}")
    name = image_name(job.id, job.attempt, index)
    disposition = "attachment" if download else "inline"
    filename = f"safelight-{job.id}-{index}.png"
    missing = f"job {job_id} has no image {index}"
    return await blob_response(ctx, name, "image/png", missing, (disposition, filename))


@router.get(
    "/api/jobs/{job_id}/previews/{attempt}/{step}", summary="A preview (JPEG)", tags=["images"]
)
async def get_preview(
    request: Request,
    job_id: JOB_ID,
    attempt: Annotated[int, Path(ge=1, le=1000)],
    step: Annotated[int, Path(ge=0, le=100000)],
) -> Response:
    ctx = ctx_of(request)
    name = preview_name(job_id, attempt, step, "jpg")
    return await blob_response(ctx, name, "image/jpeg", "no such preview")


@router.get(
    "/api/options", summary="Form options: providers, styles, sizes, limits", tags=["service"]
)
async def options(request: Request) -> Response:
    ctx = ctx_of(request)
    infos = {name: p.info for name, p in ctx.service.providers.items()}
    return JSONResponse(
        options_view(
            infos,
            ctx.settings.provider,
            [t.value for t in ctx.settings.transports],
            ctx.settings.max_attempts,
        )
    )


@router.get("/healthz", tags=["service"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["service"])
async def readyz(request: Request) -> Response:
    ctx = ctx_of(request)
    try:
        await ctx.store.read(SqlStore.now_ms)
    except Exception:
        return JSONResponse(
            {"status": "unavailable"}, status_code=503, headers={"Retry-After": "5"}
        )
    if ctx.shutting_down:
        return JSONResponse(
            {"status": "shutting_down"}, status_code=503, headers={"Retry-After": "5"}
        )
    problems = ctx.runtime.problems() if ctx.runtime is not None else []
    if problems:
        # Cannot claim or deliver (listener down, slots failing, a loop dead).
        return JSONResponse(
            {"status": "unavailable", "problems": problems},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    return JSONResponse({"status": "ready"})


@router.get("/metrics", tags=["service"], include_in_schema=False)
async def metrics(request: Request) -> Response:
    ctx = ctx_of(request)
    counts = await ctx.store.read(SqlStore.count_by_status)
    pending = await ctx.store.read(webhook_rows.pending_count)
    return Response(ctx.metrics.render(counts, pending), media_type="text/plain; version=0.0.4")


__all__ = ["Conflict", "router"]
