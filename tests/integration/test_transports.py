"""Every transport against a real uvicorn: resume from a cursor with no lost or repeated
event, across random disconnects, transport switches and server restarts."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.integration.helpers import (
    assert_exactly_once,
    create,
    get,
    poll,
    read_sse,
    read_ws,
    wait_status,
)

Factory = Callable[..., LiveServer]
# ~150 events: 150 steps at 10 ms with progress every 20 ms, plus previews.
LONG_JOB = {"steps": 150, "width": 128, "height": 128}


def follow_with_disconnects(
    server: LiveServer, job_id: str, transport: str, rng: random.Random
) -> tuple[list[dict[str, Any]], int]:
    """Read 0..3 events per connection, drop it, resume from the cursor; until terminal."""
    got: list[dict[str, Any]] = []
    disconnects = 0
    while not got or got[-1]["type"] not in {"completed", "failed", "cancelled"}:
        cursor = got[-1]["seq"] if got else 0
        limit = rng.randint(0, 3)
        if transport == "ws":
            _, events, _ = read_ws(server.url, job_id, cursor, limit=limit)
        elif transport == "sse":
            _, events, status = read_sse(server.url, job_id, cursor, limit=limit or 1)
            assert status == 200
        else:
            events = poll(server.url, job_id, cursor, wait=0.5)["events"][: limit or 1]
        got += events
        disconnects += 1
    return got, disconnects


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
def test_random_disconnects_lose_and_repeat_nothing(live_server: Factory, transport: str) -> None:
    server = live_server(step_delay_s=0.02)
    job = create(server.url, **LONG_JOB)
    got, disconnects = follow_with_disconnects(server, job["id"], transport, random.Random(7))
    assert disconnects >= 50
    assert_exactly_once(got)
    assert got[-1]["type"] == "completed"
    assert get(server.url, job["id"])["last_seq"] == got[-1]["seq"]


def test_switching_transport_mid_job(live_server: Factory) -> None:
    server = live_server(step_delay_s=0.02)
    job = create(server.url, **LONG_JOB)
    got: list[dict[str, Any]] = []
    turn = 0
    while not got or got[-1]["type"] != "completed":
        cursor = got[-1]["seq"] if got else 0
        kind = ("ws", "sse", "poll")[turn % 3]
        if kind == "ws":
            got += read_ws(server.url, job["id"], cursor, limit=4)[1]
        elif kind == "sse":
            got += read_sse(server.url, job["id"], cursor, limit=4)[1]
        else:
            got += poll(server.url, job["id"], cursor, wait=1)["events"][:4]
        turn += 1
    assert turn > 10
    assert_exactly_once(got)


def test_welcome_then_events_then_close_1000(live_server: Factory) -> None:
    server = live_server()
    job = create(server.url)
    welcome, events, closed = read_ws(server.url, job["id"], 0)
    assert welcome["type"] == "welcome" and welcome["transport"] == "ws"
    assert welcome["job_id"] == job["id"] and "last_seq" in welcome and "status" in welcome
    assert closed
    assert_exactly_once(events)
    types = [e["type"] for e in events]
    assert types[0] == "queued" and "running" in types and "uploading" in types
    assert types[-1] == "completed"
    assert all(e["job_id"] == job["id"] and e["ts"].endswith("Z") for e in events)


def test_pings_flow_when_nothing_else_does(live_server: Factory) -> None:
    import json

    from websockets.sync.client import connect

    server = live_server(ping_interval_s=0.05, concurrency=0)  # no worker: job stays queued
    job = create(server.url)
    url = server.url.replace("http", "ws") + f"/api/jobs/{job['id']}/ws?after=1"
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        ping = json.loads(ws.recv(timeout=5))
        assert ping == {"type": "ping", "last_seq": 1}


def test_sse_headers_retry_and_204_after_terminal(live_server: Factory) -> None:
    server = live_server()
    job = create(server.url)
    wait_status(server.url, job["id"], {"completed"})
    with httpx.stream("GET", f"{server.url}/api/jobs/{job['id']}/stream?after=0", timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache, no-transform"
        assert r.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in r.headers
        text = r.read().decode()
    head = text.split("\n\n")[0]
    assert "event: welcome" in head
    retry = int(next(line for line in head.splitlines() if line.startswith("retry:"))[6:])
    assert 100 <= retry <= 200  # the configured jitter range
    last = get(server.url, job["id"])["last_seq"]
    r2 = httpx.get(f"{server.url}/api/jobs/{job['id']}/stream?after={last}", timeout=10)
    assert r2.status_code == 204
    r3 = httpx.get(
        f"{server.url}/api/jobs/{job['id']}/stream?after=0",
        headers={"Last-Event-ID": str(last)},
        timeout=10,
    )
    assert r3.status_code == 204  # Last-Event-ID wins over after


def test_last_event_id_resumes_sse(live_server: Factory) -> None:
    server = live_server()
    job = create(server.url)
    wait_status(server.url, job["id"], {"completed"})
    _, events, _ = read_sse(server.url, job["id"], 0, last_event_id="3")
    assert events[0]["seq"] == 4


def test_cursor_beyond_last_seq(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    r = httpx.get(f"{server.url}/api/jobs/{job['id']}/events?after=99", timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "cursor_ahead"
    welcome, events, _ = read_ws(server.url, job["id"], 99, limit=0)
    assert welcome["reset"] is True and welcome["last_seq"] == 1 and events == []


def test_long_poll_waits_for_the_next_event(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    started = time.monotonic()
    body = poll(server.url, job["id"], 1, wait=0.3)
    assert time.monotonic() - started >= 0.25  # held, not answered at once
    assert body["events"] == [] and body["terminal"] is False and body["status"] == "queued"
    assert body["poll_after_ms"] == 50

    def cancel_soon() -> None:
        time.sleep(0.2)
        httpx.post(
            f"{server.url}/api/jobs/{job['id']}/cancel",
            headers={"Authorization": f"Bearer {job['manage_token']}"},
        )

    threading.Thread(target=cancel_soon).start()
    body = poll(server.url, job["id"], 1, wait=10)
    assert [e["type"] for e in body["events"]] == ["cancelled"] and body["terminal"] is True


def test_server_killed_mid_job_then_restarted(live_server: Factory) -> None:
    server = live_server(step_delay_s=0.03)
    job = create(server.url, **LONG_JOB)
    got: list[dict[str, Any]] = []
    got += read_ws(server.url, job["id"], 0, limit=12)[1]
    assert any(e["type"] == "running" for e in got)
    server.kill()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/healthz", timeout=1)
    server.start()
    # Resume on each transport in turn from the same cursor.
    got += read_sse(server.url, job["id"], got[-1]["seq"], limit=5)[1]
    got += poll(server.url, job["id"], got[-1]["seq"])["events"][:3]
    got += read_ws(server.url, job["id"], got[-1]["seq"])[1]
    assert_exactly_once(got)
    types = [e["type"] for e in got]
    retry = next(e for e in got if e["type"] == "retry")
    assert retry["data"] == {"attempt": 2, "max_attempts": 3, "reason": "worker_lost"}
    assert types[-1] == "completed"
    assert got[-1]["attempt"] == 2
    final = get(server.url, job["id"])
    assert final["status"] == "completed" and final["attempt"] == 2
    png = httpx.get(f"{server.url}{final['images'][0]['url']}", timeout=10)
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_foreign_origin_websocket_is_refused(live_server: Factory) -> None:
    from websockets.exceptions import InvalidStatus

    server = live_server(concurrency=0)
    job = create(server.url)
    with pytest.raises(InvalidStatus) as info:
        read_ws(server.url, job["id"], 0, origin="http://evil.test")
    assert info.value.response.status_code == 403
    # same-site but another port is another origin
    other = server.url.rsplit(":", 1)[0] + ":1"
    with pytest.raises(InvalidStatus):
        read_ws(server.url, job["id"], 0, origin=other)
    welcome, _, _ = read_ws(server.url, job["id"], 0, limit=0, origin=server.url)
    assert welcome["type"] == "welcome"


def test_unknown_job_streams_are_404(live_server: Factory) -> None:
    from websockets.exceptions import InvalidStatus

    server = live_server(concurrency=0)
    assert httpx.get(f"{server.url}/api/jobs/nope/stream").status_code == 404
    assert httpx.get(f"{server.url}/api/jobs/nope/events").status_code == 404
    with pytest.raises(InvalidStatus) as info:
        read_ws(server.url, "nope", 0)
    assert info.value.response.status_code == 404


def test_disabled_transports_refuse(live_server: Factory) -> None:
    from websockets.exceptions import InvalidStatus

    server = live_server(transports="poll")
    job = create(server.url)
    r = httpx.get(f"{server.url}/api/jobs/{job['id']}/stream")
    assert r.status_code == 404 and r.json()["code"] == "transport_disabled"
    with pytest.raises(InvalidStatus):
        read_ws(server.url, job["id"], 0)
    assert httpx.get(f"{server.url}/api/options").json()["transports"] == ["poll"]


def test_stalled_reader_is_cut_off_while_others_keep_up(live_server: Factory) -> None:
    """One client opens a WebSocket and never reads again (so it never answers the
    protocol's pings either).  The server must drop it long before the job ends, while a
    normal client receives every event; the stalled client, when it finally reads, gets
    what was buffered, then EOF - never the terminal event."""
    import socket

    server = live_server(
        step_delay_s=0.02,
        ws_ping_interval_s=0.2,
        ws_ping_timeout_s=0.3,
        stream_queue_size=8,
        send_timeout_s=0.3,
    )
    job = create(server.url, steps=150, width=64, height=64)
    host, port = server.url.removeprefix("http://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((host, int(port)))
    raw.sendall(
        (
            f"GET /api/jobs/{job['id']}/ws?after=0 HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    _, events, closed = read_ws(server.url, job["id"], 0)
    assert closed
    assert_exactly_once(events)
    assert events[-1]["type"] == "completed"
    raw.settimeout(10)
    received = b""
    while chunk := raw.recv(65536):
        received += chunk
    raw.close()
    assert b"welcome" in received
    assert b'"type":"completed"' not in received
    assert b"keepalive ping timeout" in received  # close frame 1011 from the server
