"""Request shapes and the problem+json -> exception mapping, over httpx.MockTransport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from safelight.client import AsyncClient, Client, ConnectionFailed, UnexpectedResponse
from safelight.errors import (
    Conflict,
    Forbidden,
    IdempotencyInFlight,
    MaxAttemptsReached,
    NotFound,
    RateLimited,
    StorageUnavailable,
    Unavailable,
    ValidationFailed,
)
from safelight.types import JobStatus

JOB: dict[str, Any] = {
    "id": "kq3v9Xw2T1aFZk0Rr7mWcA",
    "status": "queued",
    "cancel_requested": False,
    "attempt": 1,
    "max_attempts": 3,
    "settings": {
        "prompt": "fox",
        "negative_prompt": "",
        "width": 64,
        "height": 64,
        "steps": 5,
        "style": "watercolor",
        "seed": 1234,
        "num_images": 1,
        "provider": "builtin",
    },
    "parent_id": None,
    "progress": None,
    "queue": {"position": 1, "eta_s": 2.5},
    "preview": None,
    "images": [],
    "error": None,
    "last_seq": 1,
    "created_at": "2026-11-24T10:00:00.123Z",
    "updated_at": "2026-11-24T10:00:00.123Z",
    "started_at": None,
    "finished_at": None,
    "links": {"self": "/api/jobs/kq3v9Xw2T1aFZk0Rr7mWcA"},
}


def problem(status: int, code: str, **extra: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": "d", "code": code}
    body.update(extra)
    headers = {"content-type": "application/problem+json"}
    if status in (429, 503):
        headers["retry-after"] = "7"
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def client_answering(response: httpx.Response, seen: list[httpx.Request] | None = None) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return response

    return Client("http://test", http_transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("response", "exc_type", "code"),
    [
        (problem(404, "not_found"), NotFound, "not_found"),
        (problem(403, "forbidden"), Forbidden, "forbidden"),
        (problem(409, "max_attempts_reached"), MaxAttemptsReached, "max_attempts_reached"),
        (problem(409, "idempotency_in_flight"), IdempotencyInFlight, "idempotency_in_flight"),
        (problem(409, "already_completed"), Conflict, "already_completed"),
        (problem(429, "rate_limited"), RateLimited, "rate_limited"),
        (problem(503, "storage_unavailable"), StorageUnavailable, "storage_unavailable"),
        (problem(503, "shutting_down"), Unavailable, "shutting_down"),
        (problem(415, "unsupported_media_type"), UnexpectedResponse, "unsupported_media_type"),
        (httpx.Response(500, text="oops"), UnexpectedResponse, "unexpected_response"),
    ],
)
def test_problem_maps_to_the_exception_tree(
    response: httpx.Response, exc_type: type[Exception], code: str
) -> None:
    with client_answering(response) as client, pytest.raises(exc_type) as info:
        client.retry("j1", token="t")
    exc = info.value
    assert type(exc) is exc_type
    assert exc.code == code  # type: ignore[attr-defined]
    assert exc.status == response.status_code  # type: ignore[attr-defined]
    if isinstance(exc, RateLimited | Unavailable):
        assert exc.retry_after == 7


def test_validation_errors_carry_fields() -> None:
    errors = [{"field": "steps", "message": "must be 1..150"}]
    client = client_answering(problem(422, "validation_failed", errors=errors))
    with client, pytest.raises(ValidationFailed) as info:
        client.create("x", steps=0)
    assert info.value.errors == errors
    assert "steps" in str(info.value)


def test_connection_refused_is_connection_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = Client("http://test", http_transport=httpx.MockTransport(handler), retry_backoff_s=0)
    with client, pytest.raises(ConnectionFailed) as info:
        client.get("j1")
    assert info.value.code == "network"


def test_create_sends_key_and_only_given_settings_and_remembers_token() -> None:
    seen: list[httpx.Request] = []
    body = {**JOB, "manage_token": "secret"}
    response = httpx.Response(201, json=body, headers={"location": "/api/jobs/x"})
    with client_answering(response, seen) as client:
        job = client.create("fox", steps=5, seed=None, width=64, height=64)
        assert job.manage_token == "secret"
        assert job.status is JobStatus.QUEUED
        assert job.queue.position == 1
        assert client.tokens.get("http://test", job.id) == "secret"
        client.cancel(job.id)
    create, cancel = seen
    assert json.loads(create.content) == {"prompt": "fox", "steps": 5, "width": 64, "height": 64}
    assert 1 <= len(create.headers["idempotency-key"]) <= 255
    assert create.headers["content-type"] == "application/json"
    assert cancel.headers["authorization"] == "Bearer secret"
    assert cancel.url.path == f"/api/jobs/{job.id}/cancel"


def test_create_resends_with_the_same_key_after_a_connection_error() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        if len(keys) == 1:
            raise httpx.ReadError("reset", request=request)
        return httpx.Response(201, json={**JOB, "manage_token": "t"})

    client = Client("http://test", http_transport=httpx.MockTransport(handler), retry_backoff_s=0)
    with client:
        client.create("fox")
    assert len(keys) == 2
    assert keys[0] == keys[1]


def test_restart_merges_parent_settings_with_changes() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(200, json=JOB)
        return httpx.Response(201, json={**JOB, "id": "child", "manage_token": "t2"})

    with Client("http://test", http_transport=httpx.MockTransport(handler)) as client:
        child = client.restart(JOB["id"], steps=9, seed=None)
        with pytest.raises(TypeError):
            client.restart(JOB["id"], colour="red")
    body = json.loads(seen[1].content)
    assert body == {
        "prompt": "fox",
        "negative_prompt": "",
        "width": 64,
        "height": 64,
        "steps": 9,
        "style": "watercolor",
        "num_images": 1,
        "provider": "builtin",
        "parent_id": JOB["id"],
    }
    assert child.manage_token == "t2"


def test_download_writes_each_image(tmp_path: Path) -> None:
    done = {
        **JOB,
        "status": "completed",
        "images": [
            {"url": f"/api/jobs/{JOB['id']}/images/{i}", "width": 64, "height": 64}
            for i in range(2)
        ],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if "/images/" in request.url.path:
            return httpx.Response(200, content=b"PNG" + request.url.path[-1].encode())
        return httpx.Response(200, json=done)

    with Client("http://test", http_transport=httpx.MockTransport(handler)) as client:
        paths = client.download(JOB["id"], tmp_path / "out")
    assert [p.name for p in paths] == [f"{JOB['id']}-1.png", f"{JOB['id']}-2.png"]
    assert [p.read_bytes() for p in paths] == [b"PNG0", b"PNG1"]


def test_poll_events_page() -> None:
    seen: list[httpx.Request] = []
    page = {
        "events": [
            {"job_id": "j", "seq": 2, "type": "running", "attempt": 1, "ts": None, "data": {}}
        ],
        "last_seq": 2,
        "status": "running",
        "terminal": False,
        "poll_after_ms": 250,
    }
    with client_answering(httpx.Response(200, json=page), seen) as client:
        result = client.poll_events("j", after=1, wait=5)
    assert seen[0].url.params["after"] == "1"
    assert seen[0].url.params["wait"] == "5"
    assert [e.seq for e in result.events] == [2]
    assert result.poll_after_ms == 250
    assert result.status is JobStatus.RUNNING


@pytest.mark.anyio
async def test_async_client_maps_errors_too() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return problem(409, "max_attempts_reached")

    async with AsyncClient("http://test", http_transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(MaxAttemptsReached):
            await client.retry("j1", token="t")


def test_job_tolerates_unknown_fields() -> None:
    from safelight.client.models import Job

    job = Job.from_dict({**JOB, "something_new": {"a": 1}})
    assert job.raw["something_new"] == {"a": 1}
    assert job.settings.seed == 1234
    assert job.created_at is not None
    assert job.created_at.microsecond == 123000
