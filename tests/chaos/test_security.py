"""Security scenarios S1, S4, S6, S7, S8, S10, S11, S12 (research/reliability-anchors.md
5.2) against a real ``safelight serve``; the browser ones (S2, S3, S9) are in
test_security_browser.py.  A scenario's counts: ``lost`` = a secret or file that leaked,
``duplicated`` = a job or write that should not exist, ``stuck`` = a request that hung or
answered 5xx."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import resource
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from safelight.models import Event
from safelight.store.sql import new_id
from safelight.types import EventType
from tests import rawhttp
from tests.chaos.conftest import Scenario, trial_factor
from tests.chaos.supply_chain import audit_installed, run_bandit
from tests.conftest import LiveServer
from tests.integration.helpers import create, job_count, wait_status, ws_url

Server = Callable[..., LiveServer]


def raw_bits(token: str) -> int:
    return len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def wait_no_open_streams(server: LiveServer) -> None:
    """Streams a test closed are released when the server next writes to them."""
    deadline = time.monotonic() + 10
    pattern = re.compile(r"^safelight_open_streams\{[^}]*\} ([0-9.]+)$", re.MULTILINE)
    while True:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        if all(float(v) == 0 for v in pattern.findall(text)):
            return
        assert time.monotonic() < deadline, "closed streams were never released"
        time.sleep(0.05)


def first_preview(server: LiveServer, job_id: str) -> str:
    log = httpx.get(f"{server.url}/api/jobs/{job_id}/events", timeout=10).json()["events"]
    return str(next(e["data"]["url"] for e in log if e["type"] == "preview"))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 4)


# ---------------------------------------------------------------- S1


def test_s1_capability_ids(scenario: Callable[..., Scenario], live_server: Server) -> None:
    run = scenario("S1", "capability ids: unguessable, uniform refusals, misses rate-limited")
    limit = 6  # refills one token per 10 s: no refill during the probe below
    server = live_server(miss_rate_per_min=limit, concurrency=0)
    for n_trial in run.trials():
        # Ids and manage tokens: >= 128 bits from `secrets`, no collisions.
        n = 200_000
        ids = {new_id() for _ in range(n)}
        run.count(duplicated=n - len(ids))
        jobs = [create(server.url) for _ in range(3)]
        assert all(raw_bits(j["id"]) >= 128 and raw_bits(j["manage_token"]) >= 128 for j in jobs)

        # Whoever holds only the link (the share view) cannot control the job, and every
        # wrong credential gets the same answer: no oracle for which part was wrong.
        target = jobs[0]
        refusals = set()
        for auth in (
            None,
            "Basic eA==",
            f"Bearer {target['id']}",
            f"Bearer {jobs[1]['manage_token']}",
        ):
            for action in ("cancel", "retry"):
                r = httpx.post(
                    f"{server.url}/api/jobs/{target['id']}/{action}",
                    headers={"Authorization": auth} if auth else {},
                    timeout=10,
                )
                refusals.add((r.status_code, r.text))
        assert len(refusals) == 1 and next(iter(refusals))[0] == 403, refusals
        state = httpx.get(f"{server.url}/api/jobs/{target['id']}", timeout=10).json()
        run.count(lost=0 if state["status"] == "queued" and not state["cancel_requested"] else 1)

        page = httpx.get(f"{server.url}/jobs/{target['id']}", timeout=10)
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-robots-tag"] == "noindex"
        run.count(lost=int(target["manage_token"] in page.text))

        # Unknown ids: one answer shape (only the echoed id differs), then 429 for this
        # client only, on hits too (a prober learns nothing more at full speed).
        # Each trial probes from its own loopback address (the last one is still blocked).
        bodies = set()
        codes = []
        with client_from(f"127.0.0.{10 + n_trial}") as prober:
            for _ in range(limit + 4):
                probe = new_id()
                r = prober.get(f"{server.url}/api/jobs/{probe}")
                codes.append(r.status_code)
                if r.status_code == 404:
                    bodies.add(r.text.replace(probe, "ID"))
            blocked = prober.get(f"{server.url}/api/jobs/{target['id']}")
        assert len(bodies) == 1, bodies
        assert codes[:limit] == [404] * limit and set(codes[limit:]) == {429}, codes
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        with client_from(f"127.0.0.{200 + n_trial}") as other:
            assert other.get(f"{server.url}/api/jobs/{target['id']}").status_code == 200
        run.figure("ids_generated", n)
        run.figure("id_bits", raw_bits(target["id"]))
        run.figure("misses_before_429", codes.index(429))


# ---------------------------------------------------------------- S4

TRAVERSALS = [
    "../../../../../../etc/passwd",
    "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%255c..%255cetc%255cpasswd",
    "..\\..\\..\\..\\etc\\passwd",
    "..%5c..%5c..%5c..%5cetc%5cpasswd",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "..%00/etc/passwd",
    "%00/../../../../etc/passwd",
    "..%c0%af..%c0%af..%c0%afetc%c0%afpasswd",
    "%c0%ae%c0%ae/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "%e0%80%ae%e0%80%ae/%e0%80%ae%e0%80%ae/etc/passwd",
    "....//....//....//etc/passwd",
    "..;/..;/..;/etc/passwd",
    ".%2e/.%2e/.%2e/.%2e/etc/passwd",
    "%5c%5cevil.test%5cshare%5cx",
    "\\\\evil.test\\share\\x",
    "file:%2f%2f%2fetc%2fpasswd",
    "../sentinel.txt",
    "..%2fsentinel.txt",
    "%2e%2e%2fsentinel.txt",
    "../../sentinel.txt",
    "../safelight.db",
    "..%2f..%2fsafelight.db",
    "../../../api/../config.py",
    "..%2f..%2fconfig.py",
    "%2e%2e/%2e%2e/config.py",
]
# Base paths: the static mount, the image and preview routes, the job page, the API.
BASES = [
    "/static/",
    "/static/css/",
    "/api/jobs/{id}/images/",
    "/api/jobs/{id}/previews/1/",
    "/jobs/",
    "/api/jobs/",
]


def test_s4_path_traversal(scenario: Callable[..., Scenario], live_server: Server) -> None:
    run = scenario("S4", "path traversal corpus with raw paths: nothing outside the roots")
    server = live_server()
    marker = uuid.uuid4().hex
    (server.data_dir / "sentinel.txt").write_text(f"SENTINEL {marker}\n")
    job = wait_status(server.url, create(server.url, steps=3)["id"], {"completed"})
    preview_url = first_preview(server, job["id"])
    # A symlink planted in the images directory, named like a real preview.
    planted = server.data_dir / "blobs" / job["id"] / "7" / "preview-0007.jpg"
    planted.parent.mkdir(parents=True)
    planted.symlink_to(server.data_dir / "sentinel.txt")
    secrets_in_files = [marker, "root:x:0:", "SQLite format 3", "SAFELIGHT_"]
    page_bodies = {
        httpx.get(f"{server.url}/jobs/x", timeout=10).content,
        httpx.get(f"{server.url}/static/index.html", timeout=10).content,
    }
    legit = {
        f"/api/jobs/{job['id']}/images/0": "image/png",
        preview_url: "image/jpeg",
        "/static/css/app.css": "text/css",
    }
    corpus = [base.format(id=job["id"]) + p for base in BASES for p in TRAVERSALS]
    corpus += [f"/api/jobs/{job['id']}/previews/7/7", f"/static/..%2f..%2f..%2f{planted}"]
    assert len(corpus) >= 60
    for _ in run.trials():
        statuses: dict[int, int] = {}
        for target in corpus:
            r = rawhttp.request(server.port, "GET", target)
            statuses[r.status] = statuses.get(r.status, 0) + 1
            leaked = any(s.encode() in r.body for s in secrets_in_files)
            if leaked:
                run.fail(f"{target} leaked a file ({r.status})")
            run.count(lost=int(leaked), stuck=int(r.status >= 500 or r.status == 0))
            if r.status == 200 and r.body not in page_bodies:
                run.fail(f"{target} answered 200 with something other than a page")
        for target, ctype in legit.items():
            r = rawhttp.request(server.port, "GET", target)
            assert r.status == 200 and r.headers["content-type"].startswith(ctype), target
        run.figure("payloads", len(corpus))
        run.figure("statuses", dict(sorted(statuses.items())))
    assert run.lost == 0 and run.stuck == 0 and run.passed == run.trials_run, run.notes


# ---------------------------------------------------------------- S6


def test_s6_input_bounds(scenario: Callable[..., Scenario], live_server: Server) -> None:
    run = scenario("S6", "input bounds: over-limit is 422/413, nothing created, no 5xx")
    server = live_server(concurrency=0)
    ok = {"prompt": "p", "steps": 3, "width": 64, "height": 64}
    accepted: list[dict[str, Any]] = [
        {**ok, "prompt": "x" * 2000},
        {**ok, "prompt": "😀" * 2000},  # 4-byte UTF-8: the limit counts characters
        {**ok, "negative_prompt": "n" * 2000},
        {**ok, "width": 2048, "height": 2048, "steps": 150, "num_images": 4},
        {**ok, "seed": 0},
        {**ok, "seed": 4294967295},
    ]
    rejected: list[tuple[Any, str]] = [
        ({**ok, "prompt": "x" * 2001}, "prompt"),
        ({**ok, "prompt": "😀" * 2001}, "prompt"),
        ({**ok, "prompt": " \t\n "}, "prompt"),
        ({**ok, "negative_prompt": "n" * 2001}, "negative_prompt"),
        ({**ok, "width": 2056}, "width"),
        ({**ok, "height": 60}, "height"),
        ({**ok, "width": 100}, "width"),
        ({**ok, "steps": 0}, "steps"),
        ({**ok, "steps": 151}, "steps"),
        ({**ok, "steps": True}, "steps"),
        ({**ok, "steps": "3"}, "steps"),
        ({**ok, "steps": 3.5}, "steps"),
        ({**ok, "num_images": 5}, "num_images"),
        ({**ok, "seed": -1}, "seed"),
        ({**ok, "seed": 4294967296}, "seed"),
        ({**ok, "seed": 10**400}, "seed"),
        ({**ok, "style": ["x"]}, "style"),
        ({**ok, "provider": "nope"}, "provider"),
        ({**ok, "parent_id": "p" * 65}, "parent_id"),
        ({**ok, "extra": 1}, "extra"),
        ([ok], "body"),
    ]
    raw_rejected: list[tuple[bytes, int]] = [
        (b"[" * 100_000 + b"]" * 100_000, 413),  # over 64 KiB
        (b"[" * 30_000 + b"]" * 30_000, 422),  # deeply nested, under the cap
        (b'{"prompt": "x" ' + b" " * (1 << 20) + b"}", 413),  # 1 MiB
        (b'{"prompt":', 422),
        (b'{"prompt":"a","steps":NaN}', 422),
        (b"\xff\xfe{}", 422),
    ]
    for _ in run.trials():
        before = job_count(server.data_dir)
        times = []
        for body in accepted:
            r = httpx.post(f"{server.url}/api/jobs", json=body, timeout=10)
            assert r.status_code == 201, (body, r.text)
        for body, field in rejected:
            t0 = time.perf_counter()
            r = httpx.post(f"{server.url}/api/jobs", json=body, timeout=10)
            times.append(time.perf_counter() - t0)
            run.count(stuck=int(r.status_code >= 500))
            assert r.status_code == 422, (field, r.text)
            assert field in [e["field"] for e in r.json()["errors"]], (field, r.text)
        for raw, status in raw_rejected:
            r = httpx.post(
                f"{server.url}/api/jobs",
                content=raw,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            run.count(stuck=int(r.status_code >= 500))
            assert r.status_code == status, (raw[:40], r.status_code, r.text[:200])
            assert r.headers["content-type"] == "application/problem+json"
        created = job_count(server.data_dir) - before
        run.count(duplicated=created - len(accepted))
        run.figure("rejected_requests", len(rejected) + len(raw_rejected))
        run.figure("validation_p99_s", p99(times))
    assert "Traceback" not in server.log()
    assert run.duplicated == 0 and run.stuck == 0


# ---------------------------------------------------------------- S7


def test_s7_stream_limits_and_oversized_ws_message(
    scenario: Callable[..., Scenario], live_server: Server
) -> None:
    run = scenario("S7", "per-client stream cap (429), oversized WebSocket message (1009)")
    cap = 3
    server = live_server(max_streams_per_client=cap, concurrency=0)
    job = create(server.url)
    sse_url = f"{server.url}/api/jobs/{job['id']}/stream"
    for _ in run.trials():
        wait_no_open_streams(server)
        with httpx.Client(timeout=10) as client:
            streams = [client.stream("GET", sse_url) for _ in range(cap)]
            opened = [s.__enter__() for s in streams]
            assert [r.status_code for r in opened] == [200] * cap
            extra_sse = client.get(sse_url)
            extra_ws = rawhttp.ws_handshake(server.port, f"/api/jobs/{job['id']}/ws")
            assert extra_sse.status_code == 429 and "retry-after" in extra_sse.headers
            assert extra_ws.status == 429
            streams[0].__exit__(None, None, None)
            for s in streams[1:]:
                s.__exit__(None, None, None)
        # Closed streams are released: the cap is per open stream, not per lifetime.
        deadline = time.monotonic() + 10
        while rawhttp.ws_handshake(server.port, f"/api/jobs/{job['id']}/ws").status != 101:
            assert time.monotonic() < deadline, "closed streams were never released"
            time.sleep(0.02)

        with ws_connect(ws_url(server.url, job["id"], 0), open_timeout=10) as ws:
            ws.recv(timeout=10)  # welcome
            ws.send("x" * (1 << 20))
            code = None
            try:
                while True:
                    ws.recv(timeout=10)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            run.count(stuck=int(code != 1009))
            run.figure("oversized_message_close_code", code)
    assert run.stuck == 0
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200


def test_s7_slowloris_against_uvicorn(
    scenario: Callable[..., Scenario], live_server: Server
) -> None:
    """uvicorn has no timeout for a request whose headers never finish, so slow
    connections are held until the process runs out of file descriptors: the ceiling is
    ``ulimit -n``.  Measured here: the held connections, whether uvicorn closed any, and a
    legitimate client's latency while they are held (docs/security.md)."""
    run = scenario("S7", "slowloris against bare uvicorn: held, legit clients still served")
    slow = int(200 * trial_factor())
    hold_s = 2.0
    server = live_server()
    assert server.proc is not None
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    fd_limit = int(re.search(r"Max open files\s+(\d+)", limits).group(1))  # type: ignore[union-attr]
    for _ in run.trials():
        socks = []
        for _ in range(slow):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        latencies = []
        started = time.monotonic()
        while time.monotonic() - started < hold_s:
            for s in socks:  # one more header line each, never the blank line
                s.sendall(b"X-a: b\r\n")
            t0 = time.perf_counter()
            r = httpx.get(f"{server.url}/healthz", timeout=10)  # a new visitor each time
            latencies.append(time.perf_counter() - t0)
            run.count(stuck=int(r.status_code != 200))
            time.sleep(0.05)
        closed = 0
        for s in socks:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                closed += s.recv(1) == b""
            s.close()
        run.figure("slow_connections", slow)
        run.figure("held_s", hold_s)
        run.figure("closed_by_server", closed)
        run.figure("legit_requests", len(latencies))
        run.figure("legit_p99_s", p99(latencies))
        run.figure("fd_ceiling", fd_limit)
    assert run.stuck == 0


def test_s7_slowloris_ceiling_is_the_fd_limit(
    scenario: Callable[..., Scenario], live_server: Server
) -> None:
    """The ceiling, shown: with the server's descriptor limit lowered to what it uses
    plus ``headroom``, that many slow connections lock legitimate clients out; closing them
    lets the server recover without a restart."""
    run = scenario("S7", "slowloris ceiling: fd limit reached locks clients out, then recovers")
    headroom = 60
    server = live_server()
    assert server.proc is not None
    pid = server.proc.pid
    for _ in run.trials():
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + headroom, hard))
        socks: list[socket.socket] = []
        locked_out_at = None
        try:
            while len(socks) < headroom * 2 and locked_out_at is None:
                for _ in range(10):
                    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    socks.append(s)
                try:
                    httpx.get(f"{server.url}/healthz", timeout=1.0)
                except httpx.HTTPError:
                    locked_out_at = len(socks)
        finally:
            for s in socks:
                s.close()
        recovered = False
        deadline = time.monotonic() + 20
        while not recovered and time.monotonic() < deadline:
            try:
                recovered = httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.1)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        run.count(stuck=int(not recovered))
        if locked_out_at is None:
            run.fail(f"{len(socks)} slow connections never locked a client out")
        run.figure("fd_headroom", headroom)
        run.figure("locked_out_at_slow_connections", locked_out_at)
        run.figure("recovered_without_restart", recovered)
    assert run.stuck == 0 and run.passed == run.trials_run, run.row()


# ---------------------------------------------------------------- S8


def test_s8_image_serving_and_non_image_provider_output(
    scenario: Callable[..., Scenario], live_server: Server
) -> None:
    run = scenario("S8", "image responses: fixed type, nosniff, sandbox CSP; non-image output")
    server = live_server()
    for _ in run.trials():
        job = wait_status(server.url, create(server.url, steps=4)["id"], {"completed"})
        urls = [im["url"] for im in job["images"]] + [first_preview(server, job["id"])]
        urls.append(job["images"][0]["url"] + "?download=1")
        for url in urls:
            r = httpx.get(server.url + url, timeout=10)
            good = (
                r.status_code == 200
                and r.headers["content-type"] in ("image/png", "image/jpeg")
                and r.headers["x-content-type-options"] == "nosniff"
                and r.headers["content-security-policy"] == "default-src 'none'; sandbox"
                and r.content.startswith((b"\x89PNG", b"\xff\xd8\xff"))
            )
            if not good:
                run.fail(f"{url}: {r.status_code} {dict(r.headers)}")
        dl = httpx.get(server.url + urls[-1], timeout=10)
        assert dl.status_code == 200
        assert dl.headers["content-disposition"].startswith("attachment")

        # A provider that returns HTML bytes instead of images (fault directive `output`).
        bad = create(server.url, prompt="a page [[fail:output@1]]", steps=3)
        bad = wait_status(server.url, bad["id"], {"failed", "completed"})
        assert bad["status"] == "failed", bad
        assert bad["error"]["code"] == "invalid_output" and bad["images"] == []
        served = httpx.get(f"{server.url}/api/jobs/{bad['id']}/images/0", timeout=10)
        stored = [
            p for p in (server.data_dir / "blobs" / bad["id"]).rglob("*") if p.suffix == ".png"
        ]
        leaked = int(served.status_code != 404) + len(stored)
        leaked += int(b"<script" in served.content)
        run.count(lost=leaked)
        run.figure("image_responses_checked", len(urls))
    assert run.lost == 0 and run.passed == run.trials_run, run.notes


# ---------------------------------------------------------------- S10

INJECTIONS = [
    "a\rb",
    "a\nb",
    "a\r\nb",
    "x\nevent: completed\ndata: {}\n\n",
    "x\rid: 999\r",
    'x\r\nretry: 1\r\n\r\nid: 998\r\ndata: {"seq": 998}\r\n',
    "\ndata: spoof\n",
]


def parse_sse(raw: bytes) -> list[dict[str, str]]:
    """Strict parser (WHATWG rules: CR, LF and CRLF all end a line)."""
    frames: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in re.split(r"\r\n|\r|\n", raw.decode("utf-8")):
        if line == "":
            if current:
                frames.append(current)
            current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        current[name] = current.get(name, "") + value.removeprefix(" ")
    return frames


def test_s10_sse_field_injection(scenario: Callable[..., Scenario], live_server: Server) -> None:
    run = scenario("S10", "SSE field injection: CR/LF in user text cannot forge fields")
    server = live_server()
    for _ in run.trials():
        for payload in INJECTIONS:
            job = create(server.url, prompt=f"p {payload}", negative_prompt=payload, steps=3)
            wait_status(server.url, job["id"], {"completed"})
            r = httpx.get(f"{server.url}/api/jobs/{job['id']}/stream", timeout=10)
            frames = parse_sse(r.content)
            last_seq = httpx.get(f"{server.url}/api/jobs/{job['id']}", timeout=10).json()
            ids = [int(f["id"]) for f in frames if "id" in f]
            names = {f.get("event", "message") for f in frames}
            fields = {k for f in frames for k in f}
            events = [json.loads(f["data"]) for f in frames if "id" in f]
            spoofed = (
                int(ids != list(range(1, last_seq["last_seq"] + 1)))
                + int(not names <= {"welcome", "ping", "message"})
                + int(not fields <= {"id", "data", "event", "retry"})
                + sum(1 for f in frames if f.get("data") == "spoof")
                + sum(1 for e, i in zip(events, ids, strict=True) if e["seq"] != i)
                + abs(sum(1 for e in events if e["type"] == "completed") - 1)
            )
            run.count(duplicated=spoofed)
        # The serializer itself: user text inside event data never yields raw CR/LF.
        for payload in INJECTIONS:
            ev = Event("j", 1, EventType.FAILED, 1, 0, {"error": {"message": payload}})
            run.count(duplicated=int("\r" in ev.json or "\n" in ev.json))
        run.figure("payloads", len(INJECTIONS))
    assert run.duplicated == 0


# ---------------------------------------------------------------- S11


def test_s11_log_injection(scenario: Callable[..., Scenario], live_server: Server) -> None:
    run = scenario("S11", "log injection: one JSON record per request, no raw control bytes")
    server = live_server(log_level="info", log_format="json")
    prompt_marker = secrets.token_hex(8)
    for _ in run.trials():
        sent: list[str] = []
        nasty = ["%0a", "%0d", "%0d%0a", "%1b%5b2J", "%1b]0;title%07", "%e2%80%ae", "%00"]
        for i, piece in enumerate(nasty):
            marker = f"m{secrets.token_hex(4)}{i}"
            sent.append(marker)
            rawhttp.request(server.port, "GET", f"/api/jobs/{marker}{piece}x{piece}?token=s3cret")
        body = json.dumps(
            {
                "prompt": f'{prompt_marker}\n\x1b[2J{{"status":500}}\r',
                "steps": 3,
                "width": 64,
                "height": 64,
            }
        ).encode()
        created = rawhttp.request(
            server.port, "POST", "/api/jobs", {"Content-Type": "application/json"}, body
        ).json()
        wait_status(server.url, created["id"], {"completed"})
        # A request uvicorn itself refuses (raw control byte in the target).
        rawhttp.request(server.port, "GET", b"/api/jobs/\x1b[2J\r")
        deadline = time.monotonic() + 10  # records are written just after each response
        done = re.compile(rb'"job_id":"%s",[^}]*"event":"completed"' % created["id"].encode())
        while not (
            all(m.encode() in server.log_path.read_bytes() for m in sent)
            and done.search(server.log_path.read_bytes())
        ):
            assert time.monotonic() < deadline, "request records never appeared"
            time.sleep(0.02)
        raw = server.log_path.read_bytes()
        bad_bytes = sum(raw.count(b) for b in (b"\x1b", b"\r", b"\x00", b"\x07"))
        records = []
        unparsable = 0
        for line in raw.decode("utf-8", "replace").splitlines():
            if not line.startswith("{"):
                unparsable += not line.startswith("Safelight ")  # the start-up banner
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                unparsable += 1
        per_marker = [
            sum(1 for r in records if r.get("msg") == "request" and m in r.get("path", ""))
            for m in sent
        ]
        leaks = int(prompt_marker in raw.decode("utf-8", "replace")) + int(b"s3cret" in raw)
        run.count(
            lost=leaks,
            duplicated=sum(c - 1 for c in per_marker if c > 1),
            stuck=unparsable + bad_bytes + per_marker.count(0),
        )
        run.figure("records", len(records))
        run.figure("raw_control_bytes", bad_bytes)
        # The job can be followed through its transition records (one per transition).
        trail = [r for r in records if r.get("job_id") == created["id"]]
        assert [r["event"] for r in trail] == ["queued", "running", "uploading", "completed"]
        assert [r["seq"] for r in trail] == sorted(r["seq"] for r in trail)
        assert {r["attempt"] for r in trail} == {1} and trail[-1]["status"] == "completed"
    assert run.lost == 0 and run.duplicated == 0 and run.stuck == 0, run.row()


# ---------------------------------------------------------------- S12


@pytest.mark.timeout(300)
def test_s12_supply_chain(scenario: Callable[..., Scenario]) -> None:
    run = scenario("S12", "bandit clean (ignores justified); pinned advisories not present")
    root = Path(__file__).resolve().parents[2]

    for _ in run.trials():
        findings = run_bandit(root)
        run.count(lost=len(findings))
        hits, checked = audit_installed(root / "security" / "advisories.json")
        run.count(lost=len(hits))
        run.figure("advisories_checked", checked)
        run.figure("bandit_findings", len(findings))
    assert run.lost == 0, run.notes
