"""The request guard: the first thing every HTTP request and WebSocket handshake meets.

1. **Host allow-list** (DNS rebinding).  A page on ``rebind.evil.test`` whose name is made
   to resolve to 127.0.0.1 talks to us with ``Host: rebind.evil.test`` and an Origin that
   matches it, so an Origin check that derives "our origin" from Host passes.  Only the
   Host header tells the two apart.  An IP-literal Host cannot be a rebinding (the page's
   origin *is* that address), so IP literals are fine; names must be known.
2. **Fetch metadata**.  Browsers send ``Sec-Fetch-Site`` on every request; a
   state-changing request from another site (or another origin of the same site, e.g.
   another port on localhost) is refused even without an Origin header.  Non-browser
   clients send none and are unaffected.
3. **Lookup misses**.  Job ids are capabilities (>= 128 random bits); a client that keeps
   asking for unknown ones is probing, so after ``miss_rate_per_min`` misses its job
   lookups get 429 until the bucket refills.
"""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from safelight.api.problems import problem
from safelight.api.security import RateLimiter
from safelight.config import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# "none" is a navigation the user started (typed URL, bookmark).
SAFE_FETCH_SITES = frozenset({"same-origin", "none"})
LOOPBACK_NAMES = frozenset({"localhost"})
HOST_CACHE = 256


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def host_name(host_header: str) -> str:
    """``Name:port`` / ``[v6]:port`` -> lower-case name without port or trailing dot."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name = value[: end + 1] if end > 0 else value
    else:
        name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return name.rstrip(".")


def is_loopback_bind(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


class HostPolicy:
    def __init__(self, bind_host: str, allowed: tuple[str, ...]) -> None:
        self.any = "*" in allowed
        self.names = frozenset(host_name(n) for n in allowed if n != "*")
        self.loopback_only = is_loopback_bind(bind_host)
        # Host header -> verdict: every poll and stream asks (the address parsing was a
        # few per cent of a long poll's CPU, py-spy).
        self._seen: dict[str, bool] = {}

    def allows(self, host_header: str | None) -> bool:
        if self.any or host_header is None:  # no Host: HTTP/1.0, not a browser
            return True
        known = self._seen.get(host_header)
        if known is None:
            known = self._decide(host_header)
            if len(self._seen) >= HOST_CACHE:
                self._seen.clear()  # bounded: a client inventing Host names gains nothing
            self._seen[host_header] = known
        return known

    def _decide(self, host_header: str) -> bool:
        name = host_name(host_header)
        if name in self.names or name in LOOPBACK_NAMES:
            return True
        ip = _ip(name)
        if ip is None:
            return False
        return ip.is_loopback if self.loopback_only else True


class GuardPolicy:
    """The checks themselves, shared by ``RequestGuard`` and the stream gate
    (api/gate.py), so a miss counts the same whichever served it."""

    def __init__(self, settings: Settings) -> None:
        self.hosts = HostPolicy(settings.host, settings.allowed_hosts)
        self.allowed_origins = frozenset(settings.allowed_origins)
        self.misses = RateLimiter(
            settings.miss_rate_per_min, "too many lookups of unknown jobs from this address"
        )

    def saw_status(self, scope: Scope, status: int) -> None:
        """A job route answered ``status``: a 404 spends one of the client's misses."""
        if status == 404 and str(scope["path"]).startswith("/api/jobs/"):
            self.misses.spend(scope["client"][0] if scope.get("client") else "unknown")

    def check(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        if not self.hosts.allows(headers.get("host")):
            return problem(
                400,
                "host_not_allowed",
                "Host not allowed",
                "this server does not answer to that Host name; an operator can add it to "
                "SAFELIGHT_ALLOWED_HOSTS",
            )
        method = scope.get("method", "GET")
        site = headers.get("sec-fetch-site")
        if (
            scope["type"] == "http"
            and method not in SAFE_METHODS
            and site is not None
            and site.lower() not in SAFE_FETCH_SITES
            and headers.get("origin") not in self.allowed_origins
        ):
            return problem(
                403,
                "cross_site_request",
                "Cross-site request refused",
                f"state-changing requests from another site are refused (Sec-Fetch-Site: "
                f"{site[:32]!r})",
            )
        if str(scope["path"]).startswith("/api/jobs/"):
            client = scope["client"][0] if scope.get("client") else "unknown"
            wait = self.misses.wait_s(client)
            if wait:
                return problem(
                    429,
                    "too_many_misses",
                    "Too many requests",
                    "too many lookups of unknown jobs from this address; slow down",
                    retry_after=wait,
                )
        return None


async def refuse(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    if scope["type"] == "http":
        await response(scope, receive, send)
        return
    websocket = WebSocket(scope, receive, send)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # the server cannot send HTTP errors on a handshake
        await websocket.close(1008)


class RequestGuard:
    """Pure ASGI middleware (streams pass through unbuffered)."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        policy = self.policy
        refusal = policy.check(scope)
        if refusal is not None:
            await refuse(scope, receive, send, refusal)
            return
        if not str(scope["path"]).startswith("/api/jobs/"):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                policy.saw_status(scope, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
