"""Small synchronous clients for the wire protocol, used by the integration tests.

They talk to a real server over real sockets; they are deliberately independent of
``safelight.client`` so the server is checked against API.md, not against our own client.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from websockets.sync.client import connect as ws_connect

TERMINAL = {"completed", "failed", "cancelled"}


def create(url: str, key: str | None = None, **settings: Any) -> dict[str, Any]:
    body = {"prompt": "a lighthouse at dusk", "steps": 10, "width": 64, "height": 64, **settings}
    headers = {"Idempotency-Key": key} if key else {}
    r = httpx.post(f"{url}/api/jobs", json=body, headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def get(url: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def wait_status(url: str, job_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(url, job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {statuses}: {get(url, job_id)}")


def ws_url(url: str, job_id: str, after: int) -> str:
    return url.replace("http://", "ws://") + f"/api/jobs/{job_id}/ws?after={after}"


def read_ws(
    url: str, job_id: str, after: int, limit: int | None = None, origin: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """Welcome frame, events (at most ``limit``), and whether the server closed normally."""
    events: list[dict[str, Any]] = []
    headers = {"Origin": origin} if origin else None
    with ws_connect(ws_url(url, job_id, after), additional_headers=headers, open_timeout=10) as ws:
        welcome = json.loads(ws.recv(timeout=10))
        if limit == 0:
            return welcome, events, False
        while True:
            try:
                frame = json.loads(ws.recv(timeout=20))
            except Exception:  # ConnectionClosed: the server ended the stream
                return welcome, events, True
            if frame.get("type") == "ping":
                continue
            events.append(frame)
            if limit is not None and len(events) >= limit:
                return welcome, events, False


def read_sse(
    url: str, job_id: str, after: int, limit: int | None = None, last_event_id: str | None = None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    events: list[dict[str, Any]] = []
    welcome = None
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    with (
        httpx.Client(timeout=httpx.Timeout(20, connect=10)) as client,
        connect_sse(
            client, "GET", f"{url}/api/jobs/{job_id}/stream?after={after}", headers=headers
        ) as source,
    ):
        if source.response.status_code != 200:
            return None, events, source.response.status_code
        for sse in source.iter_sse():
            if sse.event == "welcome":
                welcome = json.loads(sse.data)
                continue
            if sse.event == "ping":
                continue
            event = json.loads(sse.data)
            assert sse.id == str(event["seq"])
            events.append(event)
            if limit is not None and len(events) >= limit:
                break
    return welcome, events, 200


def poll(url: str, job_id: str, after: int, wait: float = 0) -> dict[str, Any]:
    r = httpx.get(
        f"{url}/api/jobs/{job_id}/events", params={"after": after, "wait": wait}, timeout=30
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_exactly_once(events: list[dict[str, Any]]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"gap or repeat: {seqs}"
    assert events[-1]["type"] in TERMINAL


def job_count(data_dir: Path) -> int:
    """Rows in an embedded server's jobs table (read-only), to prove nothing was created."""
    db = sqlite3.connect(f"file:{data_dir / 'safelight.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])
    finally:
        db.close()


def wait_step(url: str, job_id: str, step: int, timeout: float = 30) -> None:
    """Until the job's progress reaches ``step`` (read from the job object)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=5).json()
        if (job.get("progress") or {}).get("step", 0) >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached step {step}")


def all_events(url: str, job_id: str) -> list[dict[str, Any]]:
    """The whole log so far, by polling page after page."""
    events: list[dict[str, Any]] = []
    while True:
        body = poll(url, job_id, events[-1]["seq"] if events else 0)
        events += body["events"]
        if not body["events"]:
            return events
