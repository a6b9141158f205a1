"""Which webhook URLs the server may call: parsing, the address policy, and resolution.

A webhook lets anyone who can create a job make the server send an HTTP request, so the
target is checked twice: at create time (a clear 422) and again at every send, where the
host is resolved ONCE and the connection goes to the address that was checked (a DNS
answer that changes between check and connect - "rebinding" - cannot slip through).

Refused unless the allowlist names them: every address that is not globally routable
(loopback, private, link-local incl. the 169.254.169.254 metadata service, shared/CGNAT,
unique-local, reserved, documentation), multicast, unspecified, and IPv6 forms that embed
such an IPv4 address (IPv4-mapped, 6to4, NAT64).  Only http and https; no userinfo;
numeric hosts only as canonical dotted quads or bracketed IPv6 (``0x7f.1``, ``2130706433``
and ``0177.0.0.1`` are read differently by different resolvers).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

URL_MAX = 2048
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_HOST_CHARS = re.compile(r"^[a-z0-9.-]+$")
_METADATA = (
    ipaddress.ip_network("169.254.169.254/32"),  # AWS, GCP, Azure, OpenStack...
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS over IPv6
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefused(ValueError):
    """The URL or its address is not allowed; the message says why in plain words."""


class HostUnresolved(UrlRefused):
    """The host did not resolve (now): worth another try later, unlike a refusal."""


@dataclass(frozen=True)
class WebhookUrl:
    scheme: str  # http | https
    host: str  # lowercase hostname or IP literal (no brackets)
    port: int
    target: str  # path + query, what goes on the request line
    host_header: str

    @property
    def is_literal(self) -> bool:
        return _literal(self.host) is not None


@dataclass(frozen=True)
class Policy:
    """The allowlist (``webhook_allowed_hosts``): hostnames and IP networks."""

    hostnames: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> Policy:
        names: set[str] = set()
        nets: list[IPNetwork] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(nets))

    def names_host(self, host: str) -> bool:
        return host.rstrip(".") in self.hostnames

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)


def parse_url(url: str) -> WebhookUrl:
    """Syntax and scheme rules (no DNS).  Raises ``UrlRefused``."""
    if not isinstance(url, str) or not url:
        raise UrlRefused("must be an http(s) URL")
    if len(url) > URL_MAX:
        raise UrlRefused(f"must be at most {URL_MAX} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c == "\\" for c in url):
        raise UrlRefused("must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused("must use http or https")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UrlRefused("must not contain a user name or password")
    if parts.fragment:
        raise UrlRefused("must not contain a #fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlRefused("must name a host")
    if "%" in host:
        raise UrlRefused("has an invalid host (no zone ids or escapes in the host)")
    bracketed = "[" in parts.netloc
    literal = _literal(host)
    if literal is None:
        if ":" in host:
            raise UrlRefused("has an invalid host")
        labels = host.rstrip(".").split(".")
        if all(_NUMERIC_LABEL.match(label) for label in labels):
            raise UrlRefused("must write an IPv4 address as four decimal numbers (a.b.c.d)")
        if not _HOST_CHARS.match(host) or any(not lb or len(lb) > 63 for lb in labels):
            raise UrlRefused("has an invalid host name (use its ASCII/punycode form)")
    elif literal.version == 6 and not bracketed:
        raise UrlRefused("has an invalid host")
    if port is None:
        port = 443 if scheme == "https" else 80
    if not 1 <= port <= 65535:
        raise UrlRefused("has an invalid port")
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if literal is not None and literal.version == 6 else host
    host_header = shown if port == default else f"{shown}:{port}"
    return WebhookUrl(scheme, host, port, target, host_header)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be called (None: a public address)."""
    if ip.version == 6:
        assert isinstance(ip, ipaddress.IPv6Address)
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded)
            if inner is not None:
                return f"{inner} (embedded in an IPv6 address)"
    if any(ip in net for net in _METADATA if net.version == ip.version):
        return "the cloud metadata service"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a reserved (not publicly routable) address"
    return None


def check_addresses(url: WebhookUrl, addresses: list[IPAddress], policy: Policy) -> IPAddress:
    """The address to connect to, or ``UrlRefused``.  Every resolved address must pass:
    a name that resolves to one public and one private address is refused."""
    if not addresses:
        raise HostUnresolved(f"host {url.host} did not resolve to any address")
    if policy.names_host(url.host):
        return addresses[0]
    for ip in addresses:
        problem = address_problem(ip)
        if problem is not None and not policy.allows_address(ip):
            # The resolved address itself is not echoed: the message goes to whoever
            # created the job, and internal DNS answers are none of their business.
            where = "" if url.is_literal else f" ({url.host} resolves to it)"
            raise UrlRefused(
                f"points to {problem}{where}; webhooks may only call public addresses "
                "unless the server's webhook_allowed_hosts names it"
            )
    return addresses[0]


async def resolve(url: WebhookUrl, timeout_s: float) -> list[IPAddress]:
    """The host's addresses, resolved once (off the event loop)."""
    literal = _literal(url.host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM), timeout_s
        )
    except (OSError, TimeoutError) as exc:
        raise HostUnresolved(f"host {url.host} could not be resolved") from exc
    out: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if ip not in out:
            out.append(ip)
    return out


Resolver = Callable[[WebhookUrl, float], Awaitable[list[IPAddress]]]


async def check_url(
    url: str, policy: Policy, timeout_s: float, resolver: Resolver = resolve
) -> tuple[WebhookUrl, IPAddress]:
    """Parse, resolve and check: the parsed URL and the one address to connect to."""
    parsed = parse_url(url)
    addresses = await resolver(parsed, timeout_s)
    return parsed, check_addresses(parsed, addresses, policy)


def redact(url: str) -> str:
    """The URL as shown to anyone holding the share link: no query string (receivers
    often put a token there)."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
    return f"{shown}?…" if parts.query else shown
