"""Real WebSocket and SSE followers that keep their own cursor and record every event the
server delivered - duplicates included - so a scenario can check exactly-once by itself.

They use the project's client transports (``safelight.client.transports``): each has a
dead timer that fires when no frame at all (pings included) arrives for ``dead_after_s``,
which is the ping watchdog a blackholed client relies on.  Deliberately not the full
``EventStream`` ladder: that one dedupes, which would hide a server that repeats events.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from safelight.client.models import End, Event, Welcome
from safelight.client.stream import full_jitter
from safelight.client.transports import SSEConnection, TransportError, WebSocketConnection


@dataclass
class Followed:
    """What one follower saw of one job."""

    kind: str
    job_id: str
    seqs: list[int] = field(default_factory=list)
    terminal: str | None = None
    reconnects: int = 0
    resets: int = 0
    # Seconds from noticing a broken connection to the next welcome, per reconnect.
    outages: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # HTTP statuses of refused handshakes, with whether Retry-After was present.
    refusals: list[tuple[int, bool]] = field(default_factory=list)
    # time.monotonic() when the first broken connection of the current outage was noticed.
    broken_at: float | None = None
    welcomed_at: float | None = None
    connected: bool = False
    latencies: list[float] = field(default_factory=list)

    def check(self, last_seq: int) -> tuple[int, int]:
        """(lost, duplicated) against the job's log 1..last_seq."""
        seen = set(self.seqs)
        lost = sum(1 for s in range(1, last_seq + 1) if s not in seen)
        duplicated = len(self.seqs) - len(seen)
        return lost, duplicated


@dataclass
class FollowSettings:
    dead_after_s: float = 2.0
    open_timeout_s: float = 2.0
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 0.5
    give_up_s: float = 120.0


def _refusal(exc: BaseException) -> tuple[int, bool] | None:
    cause: Any = exc.__cause__
    response = getattr(cause, "response", None)
    status = getattr(response, "status_code", None)
    if status is None:
        return None
    headers = getattr(response, "headers", {}) or {}
    return int(status), "retry-after" in {k.lower() for k in headers}


async def follow(
    kind: str,
    base_url: str,
    job_id: str,
    http: httpx.AsyncClient,
    *,
    settings: FollowSettings | None = None,
    rng: random.Random | None = None,
    out: Followed | None = None,
) -> Followed:
    """Follow ``job_id`` over ``kind`` ("ws" or "sse") until its terminal event,
    reconnecting from the cursor after every failure with full-jitter backoff."""
    s = settings or FollowSettings()
    rng = rng or random.Random()
    got = out or Followed(kind, job_id)
    cursor = 0
    failures = 0
    deadline = time.monotonic() + s.give_up_s
    while got.terminal is None:
        if time.monotonic() > deadline:
            got.errors.append(f"gave up after {s.give_up_s:g} s at cursor {cursor}")
            return got
        conn: WebSocketConnection | SSEConnection
        if kind == "ws":
            conn = WebSocketConnection(
                base_url,
                job_id,
                cursor,
                open_timeout_s=s.open_timeout_s,
                dead_after_s=s.dead_after_s,
                headers={},
            )
        else:
            conn = SSEConnection(
                http, job_id, cursor, open_timeout_s=s.open_timeout_s, dead_after_s=s.dead_after_s
            )
        try:
            opened = await asyncio.wait_for(conn.open(), s.open_timeout_s * 2)
            now = time.monotonic()
            got.welcomed_at = now
            got.connected = True
            if got.broken_at is not None:
                got.outages.append(now - got.broken_at)
                got.broken_at = None
            if isinstance(opened, End):
                got.terminal = "at_terminal"  # SSE 204: the cursor holds the terminal event
                break
            if isinstance(opened, Welcome) and opened.reset:
                got.resets += 1
            while True:
                frame = await conn.receive()
                if isinstance(frame, Event):
                    got.seqs.append(frame.seq)
                    cursor = max(cursor, frame.seq)
                    failures = 0
                    if frame.ts is not None:
                        got.latencies.append(time.time() - frame.ts.timestamp())
                    if frame.terminal:
                        got.terminal = frame.type
                        break
                elif isinstance(frame, End):
                    raise TransportError(frame.reason or "ended before the terminal event")
        except (TransportError, TimeoutError, httpx.HTTPError, OSError) as exc:
            got.connected = False
            refused = _refusal(exc)
            if refused is not None:
                got.refusals.append(refused)
            got.reconnects += 1
            if got.broken_at is None:
                got.broken_at = time.monotonic()
            failures += 1
            await asyncio.sleep(full_jitter(failures, s.backoff_base_s, s.backoff_cap_s, rng))
        finally:
            await conn.aclose()
    got.connected = False
    return got


def unlimited_http(base_url: str) -> httpx.AsyncClient:
    """One AsyncClient for many SSE followers: no pool cap (httpx's default is 100)."""
    return httpx.AsyncClient(
        base_url=base_url,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        timeout=httpx.Timeout(10, connect=5),
    )


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3)
