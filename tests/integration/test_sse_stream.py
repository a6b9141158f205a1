"""The lean SSE response (api/sse.py) on a real server: exact framing, pings, the
disconnect watch that frees a stream, and cursor validation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from tests.conftest import LiveServer
from tests.integration.helpers import create, poll, wait_status

Factory = Callable[..., LiveServer]


def blocks(text: str) -> list[list[str]]:
    return [b.split("\n") for b in text.split("\n\n") if b]


def test_frames_are_exactly_welcome_then_one_block_per_event(live_server: Factory) -> None:
    server = live_server()
    job = create(server.url)
    wait_status(server.url, job["id"], {"completed"})
    r = httpx.get(f"{server.url}/api/jobs/{job['id']}/stream?after=0", timeout=10)
    assert r.status_code == 200 and r.text.endswith("\n\n")
    first, *rest = blocks(r.text)
    assert first[0] == "event: welcome" and first[1].startswith("data: ")
    assert first[2].startswith("retry: ") and len(first) == 3
    welcome = json.loads(first[1][6:])
    assert welcome["transport"] == "sse" and welcome["status"] == "completed"
    logged = poll(server.url, job["id"], 0)["events"]
    assert len(rest) == len(logged) == welcome["last_seq"]
    for block, event in zip(rest, logged, strict=True):
        assert block == [f"id: {event['seq']}", "data: " + block[1][6:]]
        assert json.loads(block[1][6:]) == event  # the same event object polling returns


def test_ping_frames_have_no_id_and_carry_the_cursor(live_server: Factory) -> None:
    server = live_server(ping_interval_s=0.05, concurrency=0)
    job = create(server.url)
    with httpx.stream("GET", f"{server.url}/api/jobs/{job['id']}/stream?after=1") as r:
        lines = r.iter_lines()
        assert next(lines) == "event: welcome"
        assert next(lines).startswith("data: ")
        assert next(lines).startswith("retry: ")
        assert next(lines) == ""
        assert next(lines) == "event: ping"
        assert json.loads(next(lines)[6:]) == {"type": "ping", "last_seq": 1}


def open_sse_streams(server: LiveServer) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith('safelight_open_streams{transport="sse"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_client_that_goes_away_frees_its_stream(live_server: Factory) -> None:
    """uvicorn drops writes to a vanished HTTP client silently: only the disconnect watch
    notices, so without it this stream would stay open until the job ends (never, here)."""
    server = live_server(concurrency=0)  # the job stays queued: no event would end it
    job = create(server.url)
    with httpx.stream("GET", f"{server.url}/api/jobs/{job['id']}/stream?after=1") as r:
        lines = r.iter_lines()  # kept: dropping the iterator would close the response
        assert next(lines) == "event: welcome"
        assert open_sse_streams(server) == 1
    deadline = time.monotonic() + 10
    while open_sse_streams(server) != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_sse_streams(server) == 0


def test_bad_cursor_and_job_id_are_problems(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    url = f"{server.url}/api/jobs/{job['id']}/stream"
    r = httpx.get(url, params={"after": "-1"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "after"
    r = httpx.get(url, headers={"Last-Event-ID": "x"})
    assert r.status_code == 400 and r.json()["code"] == "bad_cursor"
    r = httpx.get(f"{server.url}/api/jobs/{'x' * 65}/stream")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "job_id"
