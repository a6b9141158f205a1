"""A job's history beyond its own event log, readable with the share link (no tokens):

- ``GET /api/jobs/{id}/family``: the restart tree the job belongs to, each member with
  its attempts and how they ended, what changed against its parent (a word diff of the
  prompt, changed settings) and a thumbnail.
- ``GET /api/jobs/{id}/webhook-deliveries``: the job's webhook deliveries and every
  attempt (status, latency, error) - never the secret or a signature.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response

from safelight.api.context import ctx_of
from safelight.api.jobs import JOB_ID
from safelight.api.webhooks import webhook_view
from safelight.errors import NotFound
from safelight.models import Event, JobRecord, iso_ms
from safelight.store import webhooks as webhook_rows
from safelight.store.lineage import Family, read_family
from safelight.types import EventType, JobStatus

router = APIRouter()
FAMILY_MAX = 100
COMPARED_SETTINGS = ("width", "height", "steps", "style", "seed", "num_images", "provider")
_TOKENS = re.compile(r"\s+|\S+")


@router.get("/api/jobs/{job_id}/family", summary="The job's restarts and attempts", tags=["jobs"])
async def get_family(request: Request, job_id: JOB_ID) -> Response:
    ctx = ctx_of(request)
    family = await ctx.store.read(read_family, job_id, FAMILY_MAX)
    if family is None:
        raise NotFound(f"no job {job_id}")
    return JSONResponse(family_view(family, job_id), headers={"Cache-Control": "no-store"})


@router.get(
    "/api/jobs/{job_id}/webhook-deliveries",
    summary="The job's webhook deliveries and their attempts",
    tags=["jobs"],
)
async def get_deliveries(
    request: Request, job_id: JOB_ID, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> Response:
    ctx = ctx_of(request)
    await ctx.service.get(job_id)  # 404 for an unknown job
    webhook = await ctx.store.read(webhook_rows.get_webhook, job_id)
    deliveries = await ctx.store.read(webhook_rows.list_deliveries, job_id, limit)
    return JSONResponse(
        {"job_id": job_id, "webhook": webhook_view(webhook), "deliveries": deliveries},
        headers={"Cache-Control": "no-store"},
    )


def family_view(family: Family, focus_id: str) -> dict[str, Any]:
    by_id = {j.id: j for j in family.jobs}
    depth: dict[str, int] = {}
    members = []
    for job in family.jobs:
        parent = by_id.get(job.parent_id) if job.parent_id else None
        depth[job.id] = depth[parent.id] + 1 if parent is not None else 0
        members.append(
            {
                "id": job.id,
                "parent_id": job.parent_id,
                "depth": depth[job.id],
                "children": [c.id for c in family.jobs if c.parent_id == job.id],
                "status": job.status.value,
                "attempt": job.attempt,
                "max_attempts": job.max_attempts,
                "prompt": job.settings.get("prompt", ""),
                "created_at": iso_ms(job.created_ms),
                "finished_at": iso_ms(job.finished_ms),
                "attempts": attempts_of(job, family.events.get(job.id, [])),
                "change": None if parent is None else change(parent, job),
                "thumbnail": thumbnail(job),
                "images": [i["url"] for i in job.images]
                if job.status is JobStatus.COMPLETED
                else [],
                "links": {"page": f"/jobs/{job.id}", "self": f"/api/jobs/{job.id}"},
            }
        )
    return {
        "job_id": focus_id,
        "root_id": family.root_id,
        "truncated": family.truncated,
        "jobs": members,
    }


def attempts_of(job: JobRecord, events: list[Event]) -> list[dict[str, Any]]:
    """Each attempt and how it ended: completed, failed (with the error's type and code),
    cancelled, worker_lost; the current one shows the job's status."""
    attempts: dict[int, dict[str, Any]] = {}

    def slot(n: int) -> dict[str, Any]:
        return attempts.setdefault(
            n,
            {
                "attempt": n,
                "outcome": "queued",
                "error_type": None,
                "error_code": None,
                "started_at": None,
                "ended_at": None,
            },
        )

    slot(1)
    for ev in events:
        a = slot(ev.attempt)
        at = iso_ms(ev.ts_ms)
        if ev.type is EventType.RUNNING:
            a.update(outcome="running", started_at=at)
        elif ev.type is EventType.RETRY:
            previous = attempts.get(ev.attempt - 1)
            if previous is not None and previous["outcome"] in ("running", "queued"):
                previous.update(outcome="worker_lost", ended_at=at, error_type="internal")
                previous["error_code"] = "worker_lost"
        elif ev.type is EventType.FAILED:
            error = ev.data.get("error") or {}
            a.update(
                outcome="failed",
                ended_at=at,
                error_type=error.get("type"),
                error_code=error.get("code"),
            )
        else:  # completed, cancelled
            a.update(outcome=ev.type.value, ended_at=at)
    current = slot(job.attempt)
    if current["outcome"] in ("queued", "running") and not job.status.terminal:
        current["outcome"] = job.status.value
    return [attempts[n] for n in sorted(attempts)]


def change(parent: JobRecord, job: JobRecord) -> dict[str, Any]:
    """What a restart changed: ``kind`` is edited_prompt, changed_settings or
    same_settings; prompts as word diffs (only when they differ)."""
    before, after = parent.settings, job.settings
    prompt = word_diff(before.get("prompt", ""), after.get("prompt", ""))
    negative = word_diff(before.get("negative_prompt", ""), after.get("negative_prompt", ""))
    settings = {
        key: {"from": before.get(key), "to": after.get(key)}
        for key in COMPARED_SETTINGS
        if before.get(key) != after.get(key)
    }
    if prompt is not None or negative is not None:
        kind = "edited_prompt"
    elif settings:
        kind = "changed_settings"
    else:
        kind = "same_settings"
    return {"kind": kind, "prompt": prompt, "negative_prompt": negative, "settings": settings}


def word_diff(a: str, b: str) -> list[dict[str, str]] | None:
    """``[{op: same|added|removed, text}]`` by words (whitespace kept), None if equal."""
    if a == b:
        return None
    left, right = _TOKENS.findall(a), _TOKENS.findall(b)
    ops: list[dict[str, str]] = []

    def push(op: str, tokens: list[str]) -> None:
        text = "".join(tokens)
        if not text:
            return
        if ops and ops[-1]["op"] == op:
            ops[-1]["text"] += text
        else:
            ops.append({"op": op, "text": text})

    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            push("same", left[i1:i2])
        else:
            push("removed", left[i1:i2])
            push("added", right[j1:j2])
    return ops


def thumbnail(job: JobRecord) -> str | None:
    if job.status is JobStatus.COMPLETED and job.images:
        return str(job.images[0]["url"])
    if job.preview:
        return str(job.preview.get("url")) if job.preview.get("url") else None
    return None
