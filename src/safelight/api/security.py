"""Security headers, Origin checks and simple per-client limits."""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safelight.errors import Forbidden, RateLimited

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
IMAGE_CSP = "default-src 'none'; sandbox"
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI (api/docs.py) is served from our origin; it sets styles through the DOM,
# which style-src does not govern, so the docs page needs nothing the app pages do not.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def csp_for(path: str) -> str:
    if path == "/docs" or path.startswith("/docs/"):
        return DOCS_CSP
    if path.startswith("/api/jobs/") and ("/images/" in path or "/previews/" in path):
        return IMAGE_CSP
    if path.startswith(("/api/", "/healthz", "/readyz", "/metrics", "/openapi.json")):
        return API_CSP
    return PAGE_CSP


def with_security_headers(message: Message, path: str, csp: str) -> Message:
    """``message`` (an ``http.response.start``) with our headers added where absent."""
    headers = list(message.get("headers", []))
    present = {k.lower() for k, _ in headers}
    extra = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", csp.encode()),
    ]
    if path.startswith("/jobs/"):
        extra.append((b"x-robots-tag", b"noindex"))
    headers += [(k, v) for k, v in extra if k not in present]
    return {**message, "headers": headers}


class SecurityHeaders:
    """Pure ASGI middleware (does not buffer streaming responses)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        csp = csp_for(path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = with_security_headers(message, path, csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def own_origin(scheme: str, host: str | None) -> str | None:
    if not host:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{host}"


def check_origin(origin: str | None, scheme: str, host: str | None, allowed: Iterable[str]) -> None:
    """Browsers always send Origin on WebSocket handshakes and cross-origin POSTs; a
    missing Origin is a non-browser client (no ambient credentials to abuse)."""
    if origin is None:
        return
    if origin == own_origin(scheme, host) or origin in allowed:
        return
    raise Forbidden(f"origin {origin!r} is not allowed", code="origin_not_allowed")


class RateLimiter:
    """Token bucket per client key (events per minute, burst of the same size)."""

    def __init__(
        self, per_minute: int, message: str = "too many jobs created from this address"
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.message = message
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def wait_s(self, key: str) -> int:
        """0 when ``key`` may act now, else whole seconds until it may."""
        if self.rate <= 0 or key not in self._buckets:
            return 0
        tokens = self._tokens(key, time.monotonic())
        return 0 if tokens >= 1 else max(1, int((1 - tokens) / self.rate) + 1)

    def spend(self, key: str) -> None:
        """Take one token (not below zero) without refusing."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._buckets[key] = (max(0.0, self._tokens(key, now) - 1), now)
        if len(self._buckets) > 10_000:  # bounded memory
            self._buckets.clear()

    def hit(self, key: str) -> None:
        """Take one token, or raise ``RateLimited`` (with Retry-After) when there is none."""
        wait = self.wait_s(key)
        if wait:
            raise RateLimited(f"{self.message}; slow down", retry_after=wait)
        self.spend(key)
