"""The one exception tree of Safelight.

Every error the project raises on purpose derives from ``SafelightError``; vendor errors
(SQLite, OS, PIL, torch) are translated into it at the boundary where they occur.  The API
maps the tree to RFC 9457 problem+json in one handler, and the Python client maps those
bodies back to the same classes (see ``safelight.client``).

    SafelightError
    ├── ValidationFailed          422  bad request fields (``errors: [{field, message}]``)
    ├── NotFound                  404  unknown job, image or preview
    ├── Forbidden                 403  missing/wrong manage token, foreign Origin
    ├── Conflict                  409  state does not allow the action (``code`` says why)
    │   ├── IdempotencyInFlight        the same Idempotency-Key is still being processed
    │   └── MaxAttemptsReached         retry refused: ``attempt == max_attempts``
    ├── Unavailable               503  cannot accept work now (queue full, shutting down)
    │   ├── StorageUnavailable         disk full / data directory unwritable
    │   └── DatabaseUnavailable        the database refused or dropped the connection
    │                                  (transient: callers retry with backoff)
    ├── SchemaMismatch                 the database's schema revision is not this release's
    ├── RateLimited               429  too many requests from this client
    ├── JobFailure                     raised inside a worker; becomes the job's ``error``
    │   ├── ProviderFailure            type ``provider``
    │   ├── JobTimeout                 type ``timeout``
    │   ├── StorageFailure             type ``storage``
    │   └── InternalFailure            type ``internal``
    ├── Cancelled                      raised from a provider's step callback on cancel
    ├── WebhookRejected                a webhook delivery failed verification (client helper)
    ├── LeaseLost                      a fenced worker write matched nothing: stop at once
    └── MissingExtra                   a chosen mode needs an optional package (CLI: exit 2)

``code`` values are stable strings that clients may switch on.
"""

from __future__ import annotations

from typing import Any

from safelight.types import ErrorType, NextStep


class SafelightError(Exception):
    """Base of every Safelight error."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, message: str = "", *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message or self.title)
        self.message = message or self.title
        if code is not None:
            self.code = code
        self.extra: dict[str, Any] = extra


class ValidationFailed(SafelightError):
    status = 422
    code = "validation_failed"
    title = "The request is not valid"

    def __init__(self, errors: list[dict[str, str]], message: str = "") -> None:
        super().__init__(message or "; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class NotFound(SafelightError):
    status = 404
    code = "not_found"
    title = "Not found"


class Forbidden(SafelightError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class Conflict(SafelightError):
    status = 409
    code = "conflict"
    title = "Conflict"


class IdempotencyInFlight(Conflict):
    code = "idempotency_in_flight"
    title = "A request with this Idempotency-Key is still being processed"


class MaxAttemptsReached(Conflict):
    code = "max_attempts_reached"
    title = "This job has used all its attempts"


class Unavailable(SafelightError):
    status = 503
    code = "unavailable"
    title = "The server cannot accept work right now"

    def __init__(self, message: str = "", *, retry_after: int = 5, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class StorageUnavailable(Unavailable):
    code = "storage_unavailable"
    title = "Storage is full or not writable"


class DatabaseUnavailable(Unavailable):
    """A connection-level database failure (refused, reset, server restarting).  The
    store raises it for every such driver error, so loops can back off and retry."""

    code = "database_unavailable"
    title = "The database cannot be reached right now"


class SchemaMismatch(SafelightError):
    """The database was made by an older or newer Safelight; the node refuses to start."""

    status = 503
    code = "schema_mismatch"
    title = "The database schema does not match this release"


class RateLimited(SafelightError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, message: str = "", *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobFailure(SafelightError):
    """A failure of one attempt; ``to_error()`` is the API's error object."""

    error_type: ErrorType = ErrorType.INTERNAL
    code = "internal_error"
    retryable: bool = True
    next_steps: tuple[NextStep, ...] = (NextStep.RETRY, NextStep.CONTACT_SUPPORT)

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        retryable: bool | None = None,
        next_steps: tuple[NextStep, ...] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        if retryable is not None:
            self.retryable = retryable
        if next_steps is not None:
            self.next_steps = next_steps
        self.detail = detail or {}

    def to_error(self) -> dict[str, Any]:
        return {
            "type": self.error_type.value,
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "next_steps": [s.value for s in self.next_steps],
            "detail": self.detail,
        }


class ProviderFailure(JobFailure):
    error_type = ErrorType.PROVIDER
    code = "provider_error"
    next_steps = (NextStep.RETRY, NextStep.RETRY_LATER, NextStep.EDIT_PROMPT)


class JobTimeout(JobFailure):
    error_type = ErrorType.TIMEOUT
    code = "timeout"
    next_steps = (NextStep.RETRY, NextStep.EDIT_PROMPT)


class StorageFailure(JobFailure):
    error_type = ErrorType.STORAGE
    code = "storage_full"
    next_steps = (NextStep.RETRY_LATER, NextStep.CONTACT_SUPPORT)


class InternalFailure(JobFailure):
    error_type = ErrorType.INTERNAL
    code = "internal_error"


class Cancelled(SafelightError):
    """Raised by a provider's step callback when the job was asked to stop."""

    code = "cancelled"
    title = "Cancelled"


class LeaseLost(SafelightError):
    """A fenced worker write matched no row: another owner has the job (or it ended)."""

    code = "lease_lost"
    title = "The worker no longer holds this job's lease"


class MissingExtra(SafelightError):
    """A chosen mode or provider needs an optional package that is not installed.

    Raised before anything starts, so the command prints one line and exits 2."""

    code = "missing_extra"
    title = "An optional package is missing"

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the {extra} extra: pip install 'safelight[{extra}]'")
        self.extra_name = extra


class WebhookRejected(SafelightError):
    """A received webhook is not authentic: bad or missing signature, or a timestamp
    outside the tolerance (``safelight.client.webhooks.verify``)."""

    status = 400
    code = "webhook_rejected"
    title = "The webhook signature is not valid"
