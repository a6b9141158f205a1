"""Client-side errors, and the mapping of problem+json back to ``safelight.errors``.

The server maps the exception tree to RFC 9457 problem+json in one handler; this module is
its mirror: ``exception_from_problem`` turns a status and body back into the same class
(``409 max_attempts_reached`` -> ``MaxAttemptsReached``, ``422`` -> ``ValidationFailed``
with ``.errors``, ...).  Errors that only a client can have live here, under the same base:

    SafelightError                       (safelight.errors)
    ├── ConnectionFailed                 the server could not be reached (type ``network``)
    │   └── TransportRefused             a forced transport is disabled on the server
    └── UnexpectedResponse               a status or body the contract does not explain

Every mapped exception carries ``status`` (the HTTP status) and
``extra["problem"]`` (the problem body as received).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from safelight.errors import (
    Conflict,
    Forbidden,
    IdempotencyInFlight,
    MaxAttemptsReached,
    NotFound,
    RateLimited,
    SafelightError,
    StorageUnavailable,
    Unavailable,
    ValidationFailed,
)


class ConnectionFailed(SafelightError):
    """The server could not be reached, or the connection broke and could not be resumed.

    This is the ``network`` error type of API.md, from the client's side: there is no HTTP
    response, so ``status`` is 0.
    """

    status = 0
    code = "network"
    title = "Cannot reach the server"


class TransportRefused(ConnectionFailed):
    """A transport the caller forced (``transport="ws"``) is disabled on this server."""

    code = "transport_disabled"
    title = "The server does not offer this transport"


class UnexpectedResponse(SafelightError):
    """A response the contract does not map to a specific error (400, 413, 415, 5xx, or a
    body that is not the JSON it should be)."""

    code = "unexpected_response"
    title = "Unexpected response from the server"

    def __init__(self, message: str = "", *, status: int = 0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


def _retry_after(headers: Mapping[str, str], default: int) -> int:
    raw = headers.get("retry-after") or headers.get("Retry-After")
    if raw is None:
        return default
    try:
        return max(0, int(float(raw)))
    except ValueError:
        return default  # an HTTP-date: rare from this server; the default is a fine wait


def parse_problem(content: bytes) -> dict[str, Any]:
    """The problem+json body, or ``{}`` when the body is not a JSON object."""
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def exception_from_problem(
    status: int, problem: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> SafelightError:
    """The ``safelight.errors`` exception for an HTTP error response."""
    headers = headers or {}
    code = problem.get("code")
    code = str(code) if code else None
    message = str(problem.get("detail") or problem.get("title") or "")
    exc: SafelightError
    if status == 422:
        raw_errors = problem.get("errors")
        errors = [
            {"field": str(e.get("field", "")), "message": str(e.get("message", ""))}
            for e in (raw_errors if isinstance(raw_errors, list) else [])
            if isinstance(e, dict)
        ]
        exc = ValidationFailed(errors, message=message if not errors else "")
        if code:
            exc.code = code
    elif status == 404:
        exc = NotFound(message, code=code)
    elif status == 403:
        exc = Forbidden(message, code=code)
    elif status == 409:
        if code == MaxAttemptsReached.code:
            exc = MaxAttemptsReached(message)
        elif code == IdempotencyInFlight.code:
            exc = IdempotencyInFlight(message)
        else:
            exc = Conflict(message, code=code)
    elif status == 429:
        exc = RateLimited(message, retry_after=_retry_after(headers, 1))
        if code:
            exc.code = code
    elif status == 503:
        retry_after = _retry_after(headers, 5)
        if code == StorageUnavailable.code:
            exc = StorageUnavailable(message, retry_after=retry_after)
        else:
            exc = Unavailable(message, retry_after=retry_after, code=code)
    else:
        exc = UnexpectedResponse(message or f"HTTP {status}", status=status, code=code)
    exc.status = status
    exc.extra["problem"] = dict(problem)
    return exc
