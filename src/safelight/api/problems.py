"""The one place where exceptions become RFC 9457 problem+json responses.  No stack trace
ever leaves the server: anything outside the Safelight tree is a generic 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from safelight.errors import RateLimited, SafelightError, Unavailable, ValidationFailed

log = logging.getLogger("safelight.api")
PROBLEM = "application/problem+json"


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://safelight.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    headers = {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra["retry_after"])
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def from_error(exc: SafelightError) -> JSONResponse:
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationFailed):
        extra["errors"] = exc.errors
    if isinstance(exc, Unavailable | RateLimited):
        extra["retry_after"] = exc.retry_after
    return problem(exc.status, exc.code, exc.title, exc.message, **extra)


def install(app: FastAPI) -> None:
    async def on_safelight(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SafelightError)
        if exc.status >= 500 and not isinstance(exc, Unavailable):
            log.error("error on %s: %s", request.url.path, exc)
        return from_error(exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail))

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": str(e["loc"][-1]) if e.get("loc") else "request", "message": e["msg"]}
            for e in exc.errors()
        ]
        return problem(
            400,
            "bad_request",
            "Bad request parameters",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            errors=errors,
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return problem(
            500,
            "internal_error",
            "Internal error",
            "Something went wrong on the server; it has been logged.",
        )

    app.add_exception_handler(SafelightError, on_safelight)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(Exception, on_unexpected)
