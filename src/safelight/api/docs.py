"""``/docs``: Swagger UI for the OpenAPI description, served offline.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script; both
break on a machine without internet and under our CSP.  The assets come from the
``swagger-ui-py`` distribution (only its ``static/`` folder is used, so its framework glue
is never imported) and the page is started by our own ``/static/js/docs.js``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from safelight.api.pages import STATIC_DIR

router = APIRouter(include_in_schema=False)
ASSETS_PREFIX = "/docs/assets"


def swagger_ui_dir() -> Path | None:
    """The folder holding swagger-ui-bundle.js and swagger-ui.css, found without importing
    the package (its ``__init__`` pulls in jinja2 and handlers we do not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


@router.api_route("/docs", methods=["GET", "HEAD"])
async def docs_page() -> Response:
    return FileResponse(
        STATIC_DIR / "docs.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


def assets_app() -> StaticFiles:
    folder = swagger_ui_dir()
    if folder is None:  # a broken install; the page then says the UI failed to load
        return StaticFiles(directory=STATIC_DIR / "missing", check_dir=False)
    return StaticFiles(directory=folder)
