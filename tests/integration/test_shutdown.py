"""Graceful shutdown of an embedded server: the running job is handed back (the restart
runs it at the SAME attempt, no ``retry (worker_lost)``), WebSockets close with 1012 and
SSE streams end so clients move on at once."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import connect_sse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.conftest import LiveServer
from tests.integration.helpers import (
    all_events,
    assert_exactly_once,
    create,
    wait_status,
    wait_step,
    ws_url,
)

# uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is a clean stop.
CLEAN = {0, -signal.SIGTERM}


def sigterm(server: LiveServer) -> int:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(30)


def test_sigterm_then_restart_does_not_burn_an_attempt(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(step_delay_s=0.08, lease_s=30.0)  # running when SIGTERM lands
    job = create(server.url, steps=60)
    wait_step(server.url, job["id"], 18)
    assert sigterm(server) in CLEAN
    server.start()
    final = wait_status(server.url, job["id"], {"completed", "failed", "cancelled"}, timeout=30)
    events = all_events(server.url, job["id"])
    assert_exactly_once(events)
    assert final["status"] == "completed" and final["attempt"] == 1, final
    assert not [e for e in events if e["type"] == "retry"]
    types = [e["type"] for e in events]
    back = types.index("queued", 1)
    assert events[back]["data"]["reason"] == "handed_back"
    assert types[back + 1] == "running" and events[back + 1]["attempt"] == 1


def test_shutdown_closes_websockets_with_1012_and_ends_sse(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(step_delay_s=0.1, lease_s=30.0)
    job = create(server.url, steps=150)
    wait_status(server.url, job["id"], {"running"})
    outcome: dict[str, Any] = {}

    def follow_sse() -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(30, connect=10)) as client,
            connect_sse(client, "GET", f"{server.url}/api/jobs/{job['id']}/stream") as source,
        ):
            types = [sse.event for sse in source.iter_sse()]
        outcome["sse_ended"] = True
        outcome["sse_types"] = types

    sse = threading.Thread(target=follow_sse)
    with ws_connect(ws_url(server.url, job["id"], 0), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
        sse.start()
        time.sleep(0.3)  # both streams are open and live
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        code = None
        for _ in range(1000):  # pings and events until the server closes
            try:
                ws.recv(timeout=20)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                break
        assert code == 1012
    sse.join(30)
    assert outcome.get("sse_ended") and "welcome" in outcome["sse_types"]
    assert server.proc.wait(30) in CLEAN


def test_previews_served_before_a_hand_back_keep_their_bytes(
    live_server: Callable[..., LiveServer],
) -> None:
    """Regression: the re-run after a hand-back (same attempt) rewrote the preview blobs
    the first run had already served, although image URLs are immutable (docs/API.md)."""
    server = live_server(step_delay_s=0.03, lease_s=30.0, preview_interval_s=0.0)
    job = create(server.url, steps=40)
    wait_step(server.url, job["id"], 12)
    first_run = [e for e in all_events(server.url, job["id"]) if e["type"] == "preview"]
    assert first_run, "no preview before the hand-back"
    files = {e["data"]["url"]: next(server.data_dir.glob(f"blobs/{job['id']}/1/preview-"
                                                         f"{e['data']['step']:04d}.*"))
             for e in first_run}  # fmt: skip
    before = {url: (path.stat().st_mtime_ns, path.stat().st_ino) for url, path in files.items()}
    served = {url: httpx.get(f"{server.url}{url}").content for url in files}
    assert sigterm(server) in CLEAN
    server.start()
    wait_status(server.url, job["id"], {"completed"}, timeout=30)
    for url, path in files.items():
        assert (path.stat().st_mtime_ns, path.stat().st_ino) == before[url], f"{url} rewritten"
        assert httpx.get(f"{server.url}{url}").content == served[url]
