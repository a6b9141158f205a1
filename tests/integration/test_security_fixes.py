"""Regression tests for the defects issue 12 found by attacking a real server, each named
after what broke.  Every request goes to a real ``safelight serve`` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests import rawhttp
from tests.conftest import LiveServer
from tests.integration.helpers import create, job_count, wait_status

BODY = b'{"prompt":"a lighthouse","steps":3,"width":64,"height":64}'


def post_json(server: LiveServer, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/jobs",
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )


# ---------------------------------------------------------------- lone surrogates


def test_lone_surrogate_in_prompt_was_500_now_422_naming_prompt(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server()
    for field in ("prompt", "negative_prompt"):
        body = (
            b'{"prompt":"a\\ud800b","steps":3,"width":64,"height":64}'
            if field == "prompt"
            else b'{"prompt":"ok","negative_prompt":"x\\udfffy","steps":3,"width":64,"height":64}'
        )
        for key in (None, f"surrogate-{field}"):
            r = post_json(server, body, **({"Idempotency-Key": key} if key else {}))
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in r.json()["errors"]] == [field]
    # An unknown field whose *name* is a lone surrogate is echoed back escaped, not a 500.
    r = post_json(server, b'{"prompt":"ok","\\ud800":1}')
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "\\ud800"
    assert job_count(server.data_dir) == 0
    assert "Traceback" not in server.log()


# ---------------------------------------------------------------- DNS rebinding


def test_dns_rebinding_host_created_a_job_now_refused_before_anything(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server()
    evil = f"rebind.evil.test:{server.port}"
    r = rawhttp.request(
        server.port,
        "POST",
        "/api/jobs",
        {"Host": evil, "Origin": f"http://{evil}", "Content-Type": "application/json"},
        BODY,
    )
    assert r.status == 400, r.body
    assert r.json()["code"] == "host_not_allowed"
    assert r.headers["content-type"] == "application/problem+json"
    # ... on every route, safe ones too (a rebinding page must not even read a job).
    job = create(server.url)
    for path in (f"/api/jobs/{job['id']}", "/", "/healthz", f"/api/jobs/{job['id']}/events"):
        assert rawhttp.request(server.port, "GET", path, {"Host": evil}).status == 400
    # ... and on the WebSocket handshake, which is refused before the upgrade.
    ws = rawhttp.ws_handshake(
        server.port, f"/api/jobs/{job['id']}/ws", {"Host": evil, "Origin": f"http://{evil}"}
    )
    assert ws.status == 400
    assert ws.json()["code"] == "host_not_allowed"
    assert job_count(server.data_dir) == 1
    # Loopback names a browser can use for a loopback-bound server still work.
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}"):
        assert rawhttp.request(server.port, "GET", "/healthz", {"Host": host}).status == 200
    ok = rawhttp.ws_handshake(server.port, f"/api/jobs/{job['id']}/ws?after=0")
    assert ok.status == 101


def test_allowed_hosts_setting_admits_a_deployment_name(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(allowed_hosts="safelight.example")
    good = rawhttp.request(
        server.port,
        "POST",
        "/api/jobs",
        {"Host": "safelight.example", "Origin": "http://safelight.example"}
        | {"Content-Type": "application/json"},
        BODY,
    )
    assert good.status == 201, good.body
    bad = rawhttp.request(server.port, "GET", "/healthz", {"Host": "other.example"})
    assert bad.status == 400


# ---------------------------------------------------------------- X-Forwarded-For


def test_spoofed_x_forwarded_for_bypassed_rate_limit_now_ignored(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(create_rate_per_min=3, concurrency=0)
    codes = [
        post_json(server, BODY, **{"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(5)
    ]
    assert codes == [201, 201, 201, 429, 429]


def test_spoofed_x_forwarded_for_bypassed_stream_cap_now_ignored(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(max_streams_per_client=1, concurrency=0)
    job = create(server.url)
    url = f"{server.url}/api/jobs/{job['id']}/stream"
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", url, headers={"X-Forwarded-For": "10.0.0.1"}) as first,
    ):
        assert first.status_code == 200
        second = client.get(url, headers={"X-Forwarded-For": "10.0.0.2"})
        assert second.status_code == 429
        assert second.json()["code"] == "rate_limited"


def test_trusted_proxies_setting_believes_forwarded_for_from_that_proxy(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(create_rate_per_min=1, concurrency=0, trusted_proxies="127.0.0.1")
    codes = [
        post_json(server, BODY, **{"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(3)
    ]
    assert codes == [201, 201, 201]  # three clients behind the proxy, one job each
    assert post_json(server, BODY, **{"X-Forwarded-For": "10.0.0.1"}).status_code == 429


# ---------------------------------------------------------------- fetch metadata


def test_sec_fetch_site_cross_site_was_ignored_now_403_on_create_cancel_retry(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(step_delay_s=0.2, concurrency=2)
    running = create(server.url, steps=50)
    failed = create(server.url, prompt="boom [[fail:provider@1#*]]", steps=3)
    wait_status(server.url, failed["id"], {"failed"})
    before = job_count(server.data_dir)
    for site in ("cross-site", "same-site"):
        headers = {"Sec-Fetch-Site": site}
        r = post_json(server, BODY, **headers)
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "cross_site_request"
        assert r.headers["content-type"] == "application/problem+json"
        for job, action in ((running, "cancel"), (failed, "retry")):
            r = httpx.post(
                f"{server.url}/api/jobs/{job['id']}/{action}",
                headers={**headers, "Authorization": f"Bearer {job['manage_token']}"},
                timeout=10,
            )
            assert r.status_code == 403, r.text
            assert r.json()["code"] == "cross_site_request"
    assert job_count(server.data_dir) == before
    jobs = {
        j: httpx.get(f"{server.url}/api/jobs/{j}", timeout=10).json()
        for j in (running["id"], failed["id"])
    }
    assert jobs[running["id"]]["cancel_requested"] is False
    assert jobs[failed["id"]]["status"] == "failed"
    # Same-origin requests (our own pages) and reads from anywhere still work.
    assert post_json(server, BODY, **{"Sec-Fetch-Site": "same-origin"}).status_code == 201
    r = httpx.get(
        f"{server.url}/api/jobs/{running['id']}", headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert r.status_code == 200
