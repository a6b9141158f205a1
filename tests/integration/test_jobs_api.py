"""The JSON API against a real server: create, cancel, retry, idempotency, errors, images,
and every failure category of the builtin provider end to end."""

from __future__ import annotations

import concurrent.futures
import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import LiveServer
from tests.integration.helpers import (
    assert_exactly_once,
    create,
    get,
    poll,
    read_ws,
    wait_status,
)

Factory = Callable[..., LiveServer]


def auth(job: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {job['manage_token']}"}


def cancel(url: str, job: dict[str, Any], token: bool = True) -> httpx.Response:
    return httpx.post(
        f"{url}/api/jobs/{job['id']}/cancel", headers=auth(job) if token else {}, timeout=10
    )


def retry(url: str, job: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/api/jobs/{job['id']}/retry", headers=auth(job), timeout=10)


def test_create_returns_201_with_location_token_and_the_job(live_server: Factory) -> None:
    server = live_server()
    r = httpx.post(f"{server.url}/api/jobs", json={"prompt": "  fox ", "seed": 42})
    assert r.status_code == 201
    job = r.json()
    assert r.headers["location"] == f"/api/jobs/{job['id']}"
    assert len(job["manage_token"]) >= 22
    assert job["settings"]["prompt"] == "fox" and job["settings"]["seed"] == 42
    assert job["status"] == "queued" and job["attempt"] == 1 and job["max_attempts"] == 3
    assert job["links"]["page"] == f"/jobs/{job['id']}"
    assert "manage_token" not in get(server.url, job["id"])
    # a null seed is chosen and recorded
    seeded = create(server.url, seed=None)
    assert isinstance(seeded["settings"]["seed"], int)


def test_a_completed_job_has_downloadable_pngs(live_server: Factory) -> None:
    server = live_server()
    job = create(server.url, width=96, height=64, num_images=2, seed=5)
    done = wait_status(server.url, job["id"], {"completed"})
    assert [im["seed"] for im in done["images"]] == [5, 6]
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 10
    for index, meta in enumerate(done["images"]):
        r = httpx.get(f"{server.url}{meta['url']}?download=1")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"]
        assert "immutable" in r.headers["cache-control"]
        assert r.headers["content-disposition"].startswith("attachment")
        assert f"-{index}.png" in r.headers["content-disposition"]
        assert len(r.content) == meta["bytes"]
        assert Image.open(io.BytesIO(r.content)).size == (96, 64)
    inline = httpx.get(f"{server.url}{done['images'][0]['url']}")
    assert inline.headers["content-disposition"].startswith("inline")
    assert httpx.get(f"{server.url}/api/jobs/{job['id']}/images/2").status_code == 404
    preview = done["preview"]
    r = httpx.get(f"{server.url}{preview['url']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 512


def test_cancel_while_queued(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    job = create(server.url)
    assert cancel(server.url, job, token=False).status_code == 403
    r = cancel(server.url, job)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert cancel(server.url, job).status_code == 200  # idempotent
    _, events, closed = read_ws(server.url, job["id"], 0)
    assert closed and [e["type"] for e in events] == ["queued", "cancelled"]


def test_cancel_while_running_stops_the_stream(live_server: Factory) -> None:
    server = live_server(step_delay_s=0.05)
    job = create(server.url, steps=100)
    wait_status(server.url, job["id"], {"running"})
    r = cancel(server.url, job)
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    final = wait_status(server.url, job["id"], {"cancelled"})
    _, events, closed = read_ws(server.url, job["id"], 0)
    assert closed
    assert_exactly_once(events)
    types = [e["type"] for e in events]
    assert types[-1] == "cancelled" and "cancel_requested" in types
    assert events[-1]["data"]["reason"] == "user"
    assert events[-1]["data"]["step"] < 100
    assert final["last_seq"] == events[-1]["seq"]
    # nothing after cancelled, ever
    assert poll(server.url, job["id"], events[-1]["seq"], wait=0.3)["events"] == []
    assert cancel(server.url, job).status_code == 200


def test_cancel_finished_jobs_is_a_conflict(live_server: Factory) -> None:
    server = live_server()
    done = create(server.url)
    failed = create(server.url, prompt="x [[fail:provider@2]]")
    wait_status(server.url, done["id"], {"completed"})
    wait_status(server.url, failed["id"], {"failed"})
    assert cancel(server.url, done).json()["code"] == "already_completed"
    r = cancel(server.url, failed)
    assert r.status_code == 409 and r.json()["code"] == "already_failed"
    assert r.headers["content-type"] == "application/problem+json"


def test_retry_to_the_cap_then_409(live_server: Factory) -> None:
    server = live_server()
    job = create(server.url, prompt="storm [[fail:provider@3#*]]")
    for attempt in (1, 2, 3):
        failed = wait_status(server.url, job["id"], {"failed"})
        assert failed["attempt"] == attempt
        assert failed["error"]["type"] == "provider" and failed["error"]["retryable"] is True
        r = retry(server.url, job)
        if attempt < 3:
            assert r.status_code == 202 and r.json()["attempt"] == attempt + 1
        else:
            assert r.status_code == 409 and r.json()["code"] == "max_attempts_reached"
    _, events, _ = read_ws(server.url, job["id"], 0)
    assert_exactly_once(events)
    retries = [e["data"] for e in events if e["type"] == "retry"]
    assert retries == [
        {"attempt": 2, "max_attempts": 3, "reason": "manual"},
        {"attempt": 3, "max_attempts": 3, "reason": "manual"},
    ]


def test_retry_after_a_transient_failure_succeeds(live_server: Factory) -> None:
    server = live_server()
    job = create(server.url, prompt="storm [[fail:provider@3]]")
    wait_status(server.url, job["id"], {"failed"})
    assert retry(server.url, job).status_code == 202
    done = wait_status(server.url, job["id"], {"completed"})
    assert done["attempt"] == 2 and done["error"] is None
    assert retry(server.url, job).json()["code"] == "not_failed"
    assert httpx.post(f"{server.url}/api/jobs/{job['id']}/retry").status_code == 403


def test_two_concurrent_retries_give_one_attempt(live_server: Factory) -> None:
    server = live_server(concurrency=1)
    job = create(server.url, prompt="x [[fail:provider@1]]")
    wait_status(server.url, job["id"], {"failed"})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: retry(server.url, job).status_code, range(8)))
    assert codes.count(202) == 1 and codes.count(409) == 7
    assert get(server.url, job["id"])["attempt"] == 2


@pytest.mark.parametrize(
    ("directive", "error_type", "code"),
    [
        ("provider@2", "provider", "provider_unavailable"),
        ("internal@2", "internal", "internal_error"),
        ("timeout@2", "timeout", "stalled"),
    ],
)
def test_each_error_category_end_to_end(
    live_server: Factory, directive: str, error_type: str, code: str
) -> None:
    server = live_server(stall_deadline_s=0.5)
    job = create(server.url, prompt=f"x [[fail:{directive}]]")
    failed = wait_status(server.url, job["id"], {"failed"})
    assert failed["error"]["type"] == error_type and failed["error"]["code"] == code
    assert failed["error"]["next_steps"] and failed["error"]["message"]
    _, events, _ = read_ws(server.url, job["id"], 0)
    assert_exactly_once(events)
    assert events[-1]["data"]["error"] == failed["error"]


def test_a_worker_crash_is_retried_by_the_reaper(live_server: Factory) -> None:
    server = live_server(lease_s=0.5)
    job = create(server.url, prompt="x [[fail:crash@2]]")
    done = wait_status(server.url, job["id"], {"completed"})
    assert done["attempt"] == 2
    _, events, _ = read_ws(server.url, job["id"], 0)
    assert_exactly_once(events)
    assert {"attempt": 2, "max_attempts": 3, "reason": "worker_lost"} in [
        e["data"] for e in events if e["type"] == "retry"
    ]


def test_a_poison_pill_fails_after_exactly_max_attempts(live_server: Factory) -> None:
    server = live_server(lease_s=0.4)
    job = create(server.url, prompt="x [[fail:crash@1#*]]")
    failed = wait_status(server.url, job["id"], {"failed"})
    assert failed["attempt"] == 3 and failed["error"]["code"] == "worker_lost"
    assert retry(server.url, job).json()["code"] == "max_attempts_reached"


def test_restart_with_parent_id(live_server: Factory) -> None:
    server = live_server()
    parent = create(server.url)
    child = create(server.url, parent_id=parent["id"], prompt="edited")
    assert child["parent_id"] == parent["id"] and child["attempt"] == 1
    r = httpx.post(f"{server.url}/api/jobs", json={"prompt": "x", "parent_id": "missing"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "parent_id"


def test_idempotency_key_replay_mismatch_and_concurrency(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    body = {"prompt": "same"}
    first = httpx.post(f"{server.url}/api/jobs", json=body, headers={"Idempotency-Key": "k1"})
    again = httpx.post(f"{server.url}/api/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = httpx.post(
        f"{server.url}/api/jobs", json={"prompt": "different"}, headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/api/jobs",
            json={"prompt": "burst"},
            headers={"Idempotency-Key": "k2"},
            timeout=10,
        )

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(ids) == 1
    assert all(r.status_code in (201, 409) for r in responses)
    conflicts = [r.json() for r in responses if r.status_code == 409]
    assert all(c["code"] == "idempotency_in_flight" for c in conflicts)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'safelight_jobs{status="queued"} 2.0' in metrics
    bad = httpx.post(f"{server.url}/api/jobs", json=body, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 422


def test_validation_errors_create_nothing(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    r = httpx.post(
        f"{server.url}/api/jobs", json={"prompt": " ", "width": 100, "steps": 0, "style": "oil"}
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert {e["field"] for e in problem["errors"]} == {"prompt", "width", "steps", "style"}
    assert problem["status"] == 422 and problem["code"] == "validation_failed"
    assert 'safelight_jobs{status="queued"} 0.0' in httpx.get(f"{server.url}/metrics").text


def test_http_errors_are_problem_json(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    r = httpx.get(f"{server.url}/api/jobs/doesnotexist")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = httpx.post(
        f"{server.url}/api/jobs",
        content=b"prompt=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    r = httpx.post(
        f"{server.url}/api/jobs",
        content=b"{" + b" " * 70000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = httpx.post(
        f"{server.url}/api/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    r = httpx.post(
        f"{server.url}/api/jobs", json={"prompt": "x"}, headers={"Origin": "http://evil.test"}
    )
    assert r.status_code == 403
    for resp in (
        httpx.get(f"{server.url}/api/jobs/x/images/0"),
        httpx.get(f"{server.url}/api/jobs/..%2f..%2fetc/images/0"),
    ):
        assert resp.status_code in (404, 400, 422)
        assert "Traceback" not in resp.text


def test_queue_limit_gives_503_with_retry_after(live_server: Factory) -> None:
    server = live_server(concurrency=0, queue_limit=2)
    create(server.url)
    create(server.url)
    r = httpx.post(f"{server.url}/api/jobs", json={"prompt": "x"})
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
    assert r.json()["code"] == "queue_full"
    assert 'safelight_jobs{status="queued"} 2.0' in httpx.get(f"{server.url}/metrics").text


def test_queue_position_and_eta(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    a, b = create(server.url), create(server.url)
    assert get(server.url, b["id"])["queue"]["position"] == 2
    assert get(server.url, b["id"])["queue"]["eta_s"] > 0
    cancel(server.url, a)
    events = poll(server.url, b["id"], 0)["events"]
    assert [e["type"] for e in events] == ["queued", "position"]
    assert events[1]["data"]["position"] == 1


def test_service_endpoints(live_server: Factory) -> None:
    server = live_server(concurrency=0)
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    options = httpx.get(f"{server.url}/api/options").json()
    assert len(options["providers"][0]["styles"]) >= 6
    assert options["transports"] == ["ws", "sse", "poll"]
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/api/jobs" in spec["paths"] and "/api/jobs/{job_id}/events" in spec["paths"]
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        "safelight_jobs",
        "safelight_events_appended_total",
        "safelight_open_streams",
        "safelight_delivery_latency_seconds",
    ):
        assert name in metrics
    page = httpx.get(f"{server.url}/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{server.url}/jobs/abc").headers["x-robots-tag"] == "noindex"


def test_pages_answer_head(live_server: Factory) -> None:
    # Uptime checkers and link previews use HEAD.
    server = live_server(concurrency=0)
    assert httpx.head(f"{server.url}/").status_code == 200
    assert httpx.head(f"{server.url}/jobs/abc").status_code == 200


def test_whole_job_deadline_fails_the_attempt_with_a_timeout(live_server: Factory) -> None:
    server = live_server(step_delay_s=0.05, job_deadline_s=0.4)
    job = create(server.url, steps=100)
    failed = wait_status(server.url, job["id"], {"failed"})
    assert failed["error"]["type"] == "timeout" and failed["error"]["code"] == "job_deadline"
    assert failed["error"]["retryable"] is True


def test_create_is_rate_limited_per_client(live_server: Factory) -> None:
    server = live_server(concurrency=0, create_rate_per_min=2)
    create(server.url)
    create(server.url)
    r = httpx.post(f"{server.url}/api/jobs", json={"prompt": "x"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["code"] == "rate_limited"
