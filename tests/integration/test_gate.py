"""The stream gate (api/gate.py) on a real server: streams and long polls are served in
front of the middleware stack, yet get the same guard, headers and metrics as any route."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.conftest import LiveServer
from tests.integration.helpers import create, read_ws, wait_status, ws_url

Factory = Callable[..., LiveServer]


def test_sse_and_poll_answers_carry_the_security_headers(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    poll = httpx.get(f"{server.url}/api/jobs/{job['id']}/events", params={"after": 0})
    with httpx.stream(
        "GET", f"{server.url}/api/jobs/{job['id']}/stream", params={"after": 0}
    ) as sse:
        sse_headers = sse.headers
    for headers in (poll.headers, sse_headers):
        assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
    assert sse_headers["content-type"].startswith("text/event-stream")
    assert poll.headers["etag"] and poll.json()["events"][0]["type"] == "queued"


def test_a_host_that_is_not_allowed_is_refused_on_every_stream_route(
    live_server: Factory,
) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    evil = {"Host": "rebind.evil.test"}
    for path in ("stream", "events"):
        r = httpx.get(f"{server.url}/api/jobs/{job['id']}/{path}", headers=evil)
        assert r.status_code == 400 and r.json()["code"] == "host_not_allowed"
        assert r.headers["content-security-policy"]  # answered by the normal stack
    with (
        pytest.raises(InvalidStatus) as refused,
        ws_connect(ws_url(server.url, job["id"], 0), additional_headers=evil),
    ):
        pass
    assert refused.value.response.status_code == 400


def test_misses_on_stream_routes_count_toward_the_lookup_limit(live_server: Factory) -> None:
    server = live_server(concurrency=0, miss_rate_per_min=3)
    for i in range(3):
        kind = ("stream", "events", "stream")[i]
        r = httpx.get(f"{server.url}/api/jobs/nope{i}/{kind}")
        assert r.status_code == 404
    r = httpx.get(f"{server.url}/api/jobs/nope9/events")
    assert r.status_code == 429 and r.json()["code"] == "too_many_misses"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"wait": "26"}, "wait"),
        ({"wait": "nan"}, "wait"),
        ({"wait": "soon"}, "wait"),
    ],
)
def test_long_poll_parameters_are_checked_like_the_documented_route(
    live_server: Factory, query: dict[str, Any], field: str
) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    r = httpx.get(f"{server.url}/api/jobs/{job['id']}/events", params=query)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "bad_request" and r.json()["errors"][0]["field"] == field


def test_delivery_metrics_count_every_client(live_server: Factory) -> None:
    server = live_server(step_delay_s=0.02)
    job = create(server.url, steps=8)
    results: list[list[dict[str, Any]]] = []

    def follow() -> None:
        results.append(read_ws(server.url, job["id"], 0)[1])

    threads = [threading.Thread(target=follow) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wait_status(server.url, job["id"], {"completed"})
    assert len(results) == 3 and all(r == results[0] for r in results)
    metrics = httpx.get(f"{server.url}/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("safelight_deliveries_total"))
    assert line == f'safelight_deliveries_total{{transport="ws"}} {3 * len(results[0])}.0'
