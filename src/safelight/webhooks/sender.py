"""One webhook attempt: resolve once, check, connect to THAT address, POST, read a bounded
response.  Plain asyncio streams + h11 rather than an HTTP client library, because the
policy needs control a library hides: the socket must go to the address that was checked
(TLS still verifies the certificate against the host name), redirects are never followed
(a 3xx is just a failed attempt), and both the response head and body are capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass

import h11

from safelight import __version__
from safelight.webhooks.ssrf import (
    HostUnresolved,
    Policy,
    Resolver,
    UrlRefused,
    check_url,
    resolve,
)

USER_AGENT = f"Safelight-Webhooks/{__version__}"


@dataclass(frozen=True)
class Limits:
    connect_timeout_s: float
    read_timeout_s: float
    max_response_bytes: int
    # Certificate verification for https (None: the system's trust store).
    tls: ssl.SSLContext | None = None


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


@dataclass(frozen=True)
class Result:
    status_code: int | None
    error: str | None
    latency_ms: int
    blocked: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def send(
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: Policy,
    limits: Limits,
    resolver: Resolver = resolve,
) -> Result:
    start = time.monotonic()

    def done(status: int | None, error: str | None, blocked: bool = False) -> Result:
        return Result(status, error, int((time.monotonic() - start) * 1000), blocked)

    try:
        target, address = await check_url(url, policy, limits.connect_timeout_s, resolver)
    except HostUnresolved as exc:
        return done(None, str(exc))  # DNS may answer again later: retried
    except UrlRefused as exc:
        # An address the policy refuses (e.g. DNS now answers 127.0.0.1): never sent to.
        return done(None, f"refused: {exc}", blocked=True)
    tls = None
    if target.scheme == "https":
        # The socket goes to the checked address; the certificate is still verified
        # against the URL's host name (SNI + hostname check).
        tls = limits.tls or ssl.create_default_context()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                str(address),
                target.port,
                ssl=tls,
                server_hostname=target.host if tls is not None else None,
                limit=limits.max_response_bytes,
            ),
            limits.connect_timeout_s,
        )
    except TimeoutError:
        return done(None, f"connect timed out after {limits.connect_timeout_s:g} s")
    except (OSError, ssl.SSLError) as exc:
        return done(None, f"connect failed: {exc.__class__.__name__}: {exc}")
    try:
        status = await asyncio.wait_for(
            _exchange(reader, writer, target.host_header, target.target, body, headers, limits),
            limits.read_timeout_s,
        )
    except TimeoutError:
        return done(None, f"no response within {limits.read_timeout_s:g} s")
    except (OSError, ssl.SSLError, h11.ProtocolError, _TooLarge) as exc:
        return done(None, f"{exc.__class__.__name__}: {exc}"[:300])
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    if 200 <= status < 300:
        return done(status, None)
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    return done(status, f"HTTP {status}{note}")


class _TooLarge(Exception):
    pass


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host_header: str,
    target: str,
    body: bytes,
    headers: dict[str, str],
    limits: Limits,
) -> int:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_response_bytes)
    request = h11.Request(
        method="POST",
        target=target,
        headers=[
            ("Host", host_header),
            ("User-Agent", USER_AGENT),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *headers.items(),
        ],
    )
    writer.write(
        conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    )
    await writer.drain()
    status: int | None = None
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await reader.read(16384)
            received += len(chunk)
            if received > limits.max_response_bytes + 16384:
                # The status is known by now (or the head is absurd): stop reading.
                if status is not None:
                    return status
                raise _TooLarge(f"response over {limits.max_response_bytes} bytes")
            conn.receive_data(chunk)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Data):
            continue
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if status is None:
                raise h11.RemoteProtocolError("connection closed before a response")
            return status
