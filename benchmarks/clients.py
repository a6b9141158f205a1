"""The load generator: many WebSocket or SSE subscribers in ONE asyncio process.

The orchestrator (``benchmarks.bench``) starts one or more of these processes with
``multiprocessing`` (spawn) and talks to each over a pipe:

    worker -> {"event": "connected", ...}   every subscriber got its welcome (or failed)
    orch   -> "mark"                        the measured window starts now (CPU sample)
    worker -> {"event": "finished", ...}    every stream ended (stream mode)
    worker -> {"event": "result", ...}      per-run analysis (latencies, order checks)
    orch   -> "stop"                        idle mode: close everything; stream mode: give up

While streaming, a subscriber only appends ``(receive wall time, raw frame)`` to a list;
JSON parsing, latency and ordering checks run after the streams end, so the client spends
as little CPU as possible while the server is being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

TERMINAL = frozenset({"completed", "failed", "cancelled"})
MAX_EXAMPLES = 10


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: str) -> bytes:
    """One request on a keep-alive connection; the body of a 200 (by Content-Length)."""
    writer.write(request.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12]
    length = -1
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length < 0:
        raise RuntimeError("an answer without Content-Length")
    body = await reader.readexactly(length) if length else b""
    if status != b"200":
        raise RuntimeError(f"HTTP {status.decode()}: {body[:200]!r}")
    return body


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (1,000 sockets need 1,000 descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass(slots=True)
class WorkerSpec:
    transport: str  # "ws" | "sse" | "poll"
    url: str  # full stream URL (ws://... or http://...); ?after= for ws/sse
    after: int  # the cursor every subscriber starts from
    count: int  # subscribers in this process
    mode: str  # "stream" (follow to the terminal event) | "idle" (hold until stop)
    connect_concurrency: int = 64
    welcome_timeout_s: float = 60.0


@dataclass(slots=True)
class Sub:
    after: int
    welcome: str | None = None
    welcome_t: float = 0.0
    frames: list[tuple[float, str, str | None]] = field(default_factory=list)
    error: str | None = None
    close_code: int | None = None
    ended: bool = False  # the server ended the stream (WS close / SSE end of body)
    settled: bool = False


class Worker:
    def __init__(self, conn: Connection, spec: WorkerSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.subs = [Sub(spec.after) for _ in range(spec.count)]
        self.sem = asyncio.Semaphore(spec.connect_concurrency)
        self.ok = 0
        self.failed = 0
        self.all_settled = asyncio.Event()
        self.stop = asyncio.Event()
        self.mark_wall: float | None = None
        self.mark_cpu: float | None = None
        self.connect_started = 0.0

    # -- control pipe -----------------------------------------------------------------

    def _on_pipe(self) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message == "mark":
                    self.mark_wall, self.mark_cpu = time.time(), time.process_time()
                elif message == "stop":
                    self.stop.set()
        except (EOFError, OSError):
            self.stop.set()

    def _settle(self, sub: Sub, ok: bool) -> None:
        if sub.settled:
            return
        sub.settled = True
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.ok + self.failed == len(self.subs):
            self.all_settled.set()

    # -- subscribers ------------------------------------------------------------------

    async def _ws(self, sub: Sub) -> None:
        ws: ClientConnection | None = None
        try:
            async with self.sem:
                ws = await ws_connect(
                    self.spec.url,
                    compression=None,
                    proxy=None,
                    ping_interval=None,
                    open_timeout=self.spec.welcome_timeout_s,
                    close_timeout=2,
                    max_size=1 << 22,
                )
                welcome = await asyncio.wait_for(ws.recv(), self.spec.welcome_timeout_s)
            sub.welcome_t = time.time()
            sub.welcome = welcome if isinstance(welcome, str) else welcome.decode()
            self._settle(sub, True)
            if self.spec.mode == "idle":
                await self.stop.wait()
                return
            frames = sub.frames
            now = time.time
            async for message in ws:
                frames.append((now(), message if isinstance(message, str) else "", None))
            sub.ended = True
        except ConnectionClosed as exc:
            sub.error = f"closed abnormally: {exc}"
        except Exception as exc:
            sub.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._settle(sub, False)
            if ws is not None:
                sub.close_code = ws.close_code
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _sse(self, sub: Sub, client: httpx.AsyncClient) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with self.sem:
                    source = await stack.enter_async_context(
                        aconnect_sse(client, "GET", self.spec.url)
                    )
                    if source.response.status_code != 200:
                        raise RuntimeError(f"HTTP {source.response.status_code}")
                    events = source.aiter_sse()
                    first = await asyncio.wait_for(anext(events), self.spec.welcome_timeout_s)
                    if first.event != "welcome":
                        raise RuntimeError(f"first SSE message is {first.event!r}, not welcome")
                sub.welcome_t = time.time()
                sub.welcome = first.data
                self._settle(sub, True)
                if self.spec.mode == "idle":
                    await self.stop.wait()
                    return
                frames = sub.frames
                now = time.time
                async for sse in events:
                    if sse.event == "message":
                        frames.append((now(), sse.data, sse.id))
                sub.ended = True
        except Exception as exc:
            sub.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._settle(sub, False)

    async def _poll(self, sub: Sub) -> None:
        """Long polling: one request parked at a time on one keep-alive connection, the
        next from the new cursor as soon as an answer arrives (what the browser and
        Python clients do on the poll rung).  A minimal HTTP/1.1 client on asyncio
        streams: httpx's pool scans every connection per request, which made 10,000
        pollers take over 600 s to connect (so the load generator measured itself).
        Answers are kept raw and split into per-event frames after the run."""
        url = httpx.URL(self.spec.url)
        host, port = url.host, url.port or 80
        target = url.raw_path.split(b"?", 1)[0].decode()
        head = f" HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: safelight-bench\r\n\r\n"
        cursor = sub.after
        answers: list[tuple[float, bytes]] = []
        writer: asyncio.StreamWriter | None = None
        try:
            async with self.sem:
                reader, w = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self.spec.welcome_timeout_s
                )
                writer = w
                body = await _get(reader, w, f"GET {target}?after={cursor}&wait=0{head}")
            sub.welcome_t = time.time()
            sub.welcome = body.decode()
            answers.append((sub.welcome_t, body))
            self._settle(sub, True)
            first = json.loads(body)
            cursor = first["events"][-1]["seq"] if first["events"] else cursor
            terminal = first["terminal"]
            now = time.time
            while not terminal and not self.stop.is_set():
                body = await _get(reader, w, f"GET {target}?after={cursor}&wait=25{head}")
                answers.append((now(), body))
                # Only the cursor and the end are read while streaming.
                tail = body.rsplit(b'"last_seq":', 1)[1]
                terminal = b'"terminal":true' in tail
                events_part = body[: body.rfind(b"],")]
                if b'"seq":' in events_part:
                    cursor = int(events_part.rsplit(b'"seq":', 1)[1].split(b",", 1)[0])
            sub.ended = True
        except Exception as exc:
            sub.error = f"{type(exc).__name__}: {exc}"
        finally:
            if writer is not None:
                writer.close()
            self._settle(sub, False)
            for t, raw in answers:
                for event in json.loads(raw)["events"]:
                    sub.frames.append((t, json.dumps(event), None))

    # -- run --------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_pipe)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        timeout = httpx.Timeout(None, connect=self.spec.welcome_timeout_s)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
            self.connect_started = time.time()
            if self.spec.transport == "ws":
                tasks = [asyncio.create_task(self._ws(sub)) for sub in self.subs]
            elif self.spec.transport == "poll":
                tasks = [asyncio.create_task(self._poll(sub)) for sub in self.subs]
            else:
                tasks = [asyncio.create_task(self._sse(sub, client)) for sub in self.subs]
            settled = asyncio.create_task(self.all_settled.wait())
            stopped = asyncio.create_task(self.stop.wait())
            await asyncio.wait({settled, stopped}, return_when=asyncio.FIRST_COMPLETED)
            connected_t = time.time()
            errors = Counter(sub.error for sub in self.subs if sub.error)
            self.conn.send(
                {
                    "event": "connected",
                    "ok": self.ok,
                    "failed": self.failed,
                    "connect_s": connected_t - self.connect_started,
                    "errors": dict(errors.most_common(MAX_EXAMPLES)),
                }
            )
            if self.spec.mode == "idle":
                await self.stop.wait()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.conn.send({"event": "closed"})
                stopped.cancel()
                return
            all_done = asyncio.create_task(asyncio.wait(tasks))
            await asyncio.wait({all_done, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finish_wall, finish_cpu = time.time(), time.process_time()
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopped.cancel()
            all_done.cancel()
            self.conn.send({"event": "finished", "timed_out": self.stop.is_set()})
        loop.remove_reader(self.conn.fileno())
        result = analyse(self.spec, self.subs)
        if self.mark_wall is not None and self.mark_cpu is not None:
            wall = finish_wall - self.mark_wall
            result["cpu_s"] = finish_cpu - self.mark_cpu
            result["cpu_pct"] = 100.0 * result["cpu_s"] / wall if wall > 0 else None
        result["event"] = "result"
        self.conn.send(result)


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of one client process."""
    raise_nofile()
    try:
        asyncio.run(Worker(conn, spec).run())
    except Exception as exc:  # report rather than die silently
        with contextlib.suppress(Exception):
            conn.send({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        raise


# -- analysis (after the streams ended) -------------------------------------------------


class TsParser:
    """``2026-11-24T10:00:00.123Z`` -> epoch seconds, caching the whole-second part."""

    def __init__(self) -> None:
        self.cache: dict[str, float] = {}

    def __call__(self, ts: str) -> float:
        head = ts[:19]
        base = self.cache.get(head)
        if base is None:
            base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
            self.cache[head] = base
        return base + int(ts[20:23]) / 1000.0


def analyse(spec: WorkerSpec, subs: list[Sub]) -> dict[str, Any]:
    """Latencies of live events, delivery counts and per-subscriber order checks."""
    parse_ts = TsParser()
    # seq -> (type, ts, latencies of that event across subscribers) for live events
    by_seq: dict[int, tuple[str, float, list[float]]] = {}
    violations: Counter[str] = Counter()
    examples: list[str] = []
    close_codes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    final_seqs: Counter[int] = Counter()
    events_per_sub: list[int] = []
    deliveries = live = frame_bytes = 0
    first_live_ts = float("inf")
    last_live_recv = 0.0
    last_live_ts = 0.0

    def violation(kind: str, index: int, detail: str) -> None:
        violations[kind] += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"subscriber {index}: {kind}: {detail}")

    for index, sub in enumerate(subs):
        if sub.error:
            errors[sub.error[:160]] += 1
        if spec.transport == "ws":
            close_codes[str(sub.close_code)] += 1
        else:
            close_codes["ended" if sub.ended else "not ended"] += 1
        if sub.welcome is None:
            violation("no_welcome", index, sub.error or "no welcome frame")
            continue
        prev = sub.after
        last_type = None
        count = 0
        for recv_t, text, sse_id in sub.frames:
            body = json.loads(text)
            kind = body.get("type")
            if kind in ("ping", "welcome"):
                continue
            seq = body["seq"]
            count += 1
            frame_bytes += len(text)
            if seq != prev + 1:
                what = "gap" if seq > prev + 1 else "duplicate_or_reorder"
                violation(what, index, f"seq {seq} after {prev}")
            if sse_id is not None and sse_id != str(seq):
                violation("sse_id_mismatch", index, f"id {sse_id} for seq {seq}")
            prev = max(prev, seq)
            last_type = kind
            ts = parse_ts(body["ts"])
            if ts >= sub.welcome_t:
                live += 1
                entry = by_seq.get(seq)
                if entry is None:
                    entry = by_seq[seq] = (str(kind), ts, [])
                entry[2].append((recv_t - ts) * 1000.0)
                first_live_ts = min(first_live_ts, ts)
                last_live_recv = max(last_live_recv, recv_t)
                last_live_ts = max(last_live_ts, ts)
        deliveries += count
        events_per_sub.append(count)
        final_seqs[prev] += 1
        if spec.mode == "stream":
            if last_type not in TERMINAL:
                violation("no_terminal_event", index, f"last type {last_type}, {sub.error}")
            if not sub.ended:
                violation("not_ended_normally", index, sub.error or "stream did not end")
            elif spec.transport == "ws" and sub.close_code != 1000:
                violation("close_code", index, f"closed with {sub.close_code}")
    return {
        "subscribers": len(subs),
        "welcomed": sum(1 for s in subs if s.welcome is not None),
        "deliveries": deliveries,
        "live_deliveries": live,
        "frame_bytes": frame_bytes,
        "by_seq": by_seq,
        "first_live_ts": first_live_ts if live else None,
        "last_live_recv": last_live_recv if live else None,
        "last_live_ts": last_live_ts if live else None,
        "events_per_sub_min": min(events_per_sub, default=0),
        "events_per_sub_max": max(events_per_sub, default=0),
        "final_seqs": {str(k): v for k, v in final_seqs.items()},
        "violations": dict(violations),
        "violation_examples": examples,
        "close_codes": dict(close_codes),
        "errors": dict(errors.most_common(MAX_EXAMPLES)),
    }
