"""Polling on a real server: ETag / If-None-Match -> 304, and many parked long polls
answered together by one event."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import LiveServer
from tests.integration.helpers import create

Factory = Callable[..., LiveServer]


def test_etag_then_304_until_something_changes(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    url = f"{server.url}/api/jobs/{job['id']}/events"
    first = httpx.get(url, params={"after": 1})
    assert first.status_code == 200 and first.json()["events"] == []
    etag = first.headers["etag"]
    same = httpx.get(url, params={"after": 1}, headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    other = httpx.get(url, params={"after": 0}, headers={"If-None-Match": etag})
    assert other.status_code == 200 and len(other.json()["events"]) == 1  # another cursor
    httpx.post(
        f"{server.url}/api/jobs/{job['id']}/cancel",
        headers={"Authorization": f"Bearer {job['manage_token']}"},
    ).raise_for_status()
    changed = httpx.get(url, params={"after": 1}, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    body = changed.json()
    assert [e["type"] for e in body["events"]] == ["cancelled"]
    assert body["terminal"] is True and body["status"] == "cancelled"


def test_parked_long_polls_all_get_the_next_event(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    url = f"{server.url}/api/jobs/{job['id']}/events"
    with ThreadPoolExecutor(20) as pool:
        futures = [
            pool.submit(httpx.get, url, params={"after": 1, "wait": 20}, timeout=30)
            for _ in range(20)
        ]
        # Let them park (their answer is empty), then commit one event.
        httpx.get(url, params={"after": 1, "wait": 0.3}, timeout=10)
        httpx.post(
            f"{server.url}/api/jobs/{job['id']}/cancel",
            headers={"Authorization": f"Bearer {job['manage_token']}"},
        ).raise_for_status()
        bodies = [f.result().json() for f in futures]
    assert all([e["type"] for e in b["events"]] == ["cancelled"] for b in bodies)
    assert all(b["terminal"] and b["last_seq"] == 2 for b in bodies)
