"""The two pages (plain static files; all data comes from the JSON API)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, HTMLResponse, Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
router = APIRouter(include_in_schema=False)

_PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>Safelight</title>
<h1>Safelight</h1><p>The web UI is not installed in this build. The API is at
<a href="/docs">/docs</a>.</p>"""


def _page(name: str) -> Response:
    path = STATIC_DIR / name
    if not path.is_file():
        return HTMLResponse(_PLACEHOLDER)
    return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.api_route("/", methods=["GET", "HEAD"])
async def home() -> Response:
    return _page("index.html")


@router.api_route("/jobs/{job_id}", methods=["GET", "HEAD"])
async def job_page(job_id: str) -> Response:
    return _page("job.html")
