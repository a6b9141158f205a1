"""Webhooks end to end: a real server process sends to a real receiver on a loopback port
(allowed through ``webhook_allowed_hosts``), and the receiver checks every delivery with
the client's verify helper and the secret the server generated in its data directory."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from safelight.client.webhooks import verify
from safelight.errors import WebhookRejected
from tests.conftest import LiveServer
from tests.integration.helpers import create, wait_status
from tests.integration.receiver import Receiver, running

HOOKS: dict[str, Any] = {
    "webhook_allowed_hosts": "127.0.0.1",
    "webhook_backoff_base_s": 0.05,
    "webhook_backoff_max_s": 0.2,
    "webhook_poll_s": 0.05,
    "webhook_connect_timeout_s": 1.0,
    "webhook_read_timeout_s": 0.4,
    "webhook_lease_s": 3.0,
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running(Receiver()) as r:
        yield r


def secret_of(server: LiveServer) -> str:
    return (server.data_dir / "webhook_secret").read_text().strip()


def deliveries(server: LiveServer, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/api/jobs/{job_id}/webhook-deliveries", timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_deliveries(
    server: LiveServer, job_id: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        items: list[dict[str, Any]] = deliveries(server, job_id)["deliveries"]
        if done(items):
            return items
        time.sleep(0.05)
    raise AssertionError(f"deliveries never settled: {deliveries(server, job_id)}")


def all_final(items: list[dict[str, Any]]) -> bool:
    return bool(items) and all(d["status"] != "pending" for d in items)


def test_signed_deliveries_carry_job_id_and_seq(
    live_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    server = live_server(**HOOKS)
    hook = {"url": f"{receiver.url}?token=abc", "events": ["started", "completed"]}
    job = create(server.url, steps=4, webhook=hook)
    # Returned without the query string (the job is readable with its share link).
    assert job["webhook"] == {"url": f"{receiver.url}?…", "events": ["started", "completed"]}
    wait_status(server.url, job["id"], {"completed"})
    got = receiver.wait_for(2)
    secret = secret_of(server)
    payloads = [verify(secret, r.headers, r.body) for r in got]
    assert [p["type"] for p in payloads] == ["job.started", "job.completed"]
    events = httpx.get(f"{server.url}/api/jobs/{job['id']}/events").json()["events"]
    by_seq = {e["seq"]: e for e in events}
    for p in payloads:
        assert p["data"]["job_id"] == job["id"]
        # The payload's data is the logged event itself: receivers dedupe/order by seq.
        assert by_seq[p["data"]["seq"]] == p["data"]
    assert got[0].path == "/hook?token=abc"
    assert len({r.id for r in got}) == 2
    # Tampering with a delivered body is caught by the helper.
    with pytest.raises(WebhookRejected):
        verify(secret, got[1].headers, got[1].body.replace(b"completed", b"failed"))
    items = wait_deliveries(server, job["id"], all_final)
    assert [(d["event"], d["status"], len(d["attempts"])) for d in items] == [
        ("started", "delivered", 1),
        ("completed", "delivered", 1),
    ]
    assert items[0]["attempts"][0]["status_code"] == 200
    assert "secret" not in httpx.get(f"{server.url}/api/jobs/{job['id']}").text


def test_progress_and_preview_subscriptions(
    live_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    server = live_server(**HOOKS)
    job = create(
        server.url, steps=6, webhook={"url": receiver.url, "events": ["progress", "preview"]}
    )
    wait_status(server.url, job["id"], {"completed"})
    log = httpx.get(f"{server.url}/api/jobs/{job['id']}/events").json()["events"]
    wanted = {e["seq"]: e["type"] for e in log if e["type"] in ("progress", "preview")}
    assert "progress" in wanted.values() and "preview" in wanted.values()
    items = wait_deliveries(server, job["id"], lambda d: len(d) == len(wanted) and all_final(d))
    assert {d["seq"]: d["event"] for d in items} == wanted
    got = receiver.wait_for(len(wanted))
    assert sorted(r.json["data"]["seq"] for r in got) == sorted(wanted)
    assert {r.json["type"] for r in got} == {"job.progress", "job.preview"}


def test_retries_after_500s_and_a_timeout(
    live_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    receiver.plan = [500, 503, ("sleep", 0.8, 200)]
    server = live_server(**HOOKS)
    job = create(server.url, steps=2, webhook={"url": receiver.url})
    wait_status(server.url, job["id"], {"completed"})
    got = receiver.wait_for(4)
    assert len({r.id for r in got}) == 1  # the same delivery, retried
    (item,) = wait_deliveries(server, job["id"], all_final)
    outcomes = [(a["status_code"], a["outcome"]) for a in item["attempts"]]
    assert outcomes == [
        (500, "retrying"),
        (503, "retrying"),
        (None, "retrying"),
        (200, "delivered"),
    ]
    assert "no response within" in item["attempts"][2]["error"]
    assert all(a["latency_ms"] >= 0 for a in item["attempts"])
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'safelight_webhook_attempts_total{outcome="retrying"} 3.0' in metrics
    assert 'safelight_webhook_attempts_total{outcome="delivered"} 1.0' in metrics
    assert "safelight_webhook_queue_depth 0.0" in metrics


def test_gives_up_after_the_retry_window(
    live_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    receiver.default = 500
    server = live_server(**{**HOOKS, "webhook_retry_for_s": 0.4})
    job = create(server.url, steps=2, webhook={"url": receiver.url})
    (item,) = wait_deliveries(server, job["id"], all_final)
    assert item["status"] == "failed"
    assert item["attempts"][-1]["outcome"] == "gave_up"
    assert all(a["outcome"] == "retrying" for a in item["attempts"][:-1])


def test_restart_delivers_what_was_left_undelivered(
    live_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    receiver.default = 500
    # Long backoff: after the first failure the delivery waits, then the server dies.
    server = live_server(**{**HOOKS, "webhook_backoff_base_s": 1.0, "webhook_backoff_max_s": 1.0})
    jobs = [create(server.url, steps=2, webhook={"url": receiver.url}) for _ in range(3)]
    for job in jobs:
        wait_status(server.url, job["id"], {"completed"})
    receiver.wait_for(3)
    server.kill()
    receiver.default = 200
    before = len(receiver.received)
    server.start()
    for job in jobs:
        (item,) = wait_deliveries(server, job["id"], all_final)
        assert item["status"] == "delivered"
        assert item["attempts"][0]["outcome"] == "retrying"
    delivered = [r for r in receiver.received[before:]]
    secret = secret_of(server)  # the same secret after the restart
    ids = sorted({r.id for r in delivered if verify(secret, r.headers, r.body)})
    assert len(ids) == 3


def test_send_time_recheck_blocks_an_address_no_longer_allowed(
    live_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    receiver.default = 500
    server = live_server(**{**HOOKS, "webhook_backoff_base_s": 0.5, "webhook_backoff_max_s": 0.5})
    job = create(server.url, steps=2, webhook={"url": receiver.url})
    wait_status(server.url, job["id"], {"completed"})
    receiver.wait_for(1)
    server.stop()
    # Same data, no allowlist: 127.0.0.1 is now refused at send time (as a rebinding
    # answer would be), and the receiver hears nothing more.
    server.settings = {**server.settings, "webhook_allowed_hosts": ""}
    count = len(receiver.received)
    server.start()
    (item,) = wait_deliveries(server, job["id"], all_final)
    assert item["status"] == "failed"
    assert item["attempts"][-1]["outcome"] == "blocked"
    assert "loopback" in item["attempts"][-1]["error"]
    assert len(receiver.received) == count


SSRF_CORPUS = [
    "http://127.0.0.1/",
    "http://127.0.0.2:8080/hook",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://10.255.255.254/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.0.1/",
    "http://[fd00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.251/",
    "http://100.64.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://user@127.0.0.1/",
    "http://evil.example@127.0.0.1/",
    "http://127.0.0.1:80@evil.example/",
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/",
    "javascript:alert(1)",
    "http://localhost/",
    "http://localhost./",
    "https://LOCALHOST:8443/hook",
    "http://127.0.0.1\\@example.com/",
]


def test_ssrf_corpus_is_refused_with_422(live_server: Callable[..., LiveServer]) -> None:
    server = live_server()  # no allowlist: the default policy
    for url in SSRF_CORPUS:
        r = httpx.post(f"{server.url}/api/jobs", json={"prompt": "x", "webhook": {"url": url}})
        assert r.status_code == 422, (url, r.text)
        fields = [e["field"] for e in r.json()["errors"]]
        assert fields == ["webhook.url"], (url, r.json())
    counts = httpx.get(f"{server.url}/metrics").text
    assert 'safelight_jobs{status="queued"} 0.0' in counts  # no job was created


def test_webhook_body_validation(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(**HOOKS)
    cases: list[tuple[Any, str]] = [
        ("http://127.0.0.1/", "webhook"),
        ({"url": "http://127.0.0.1/", "events": ["done"]}, "webhook.events"),
        ({"url": "http://127.0.0.1/", "events": []}, "webhook.events"),
        ({"url": "http://127.0.0.1/", "secret": "x"}, "webhook.secret"),
        ({"events": ["completed"]}, "webhook.url"),
    ]
    for hook, field in cases:
        r = httpx.post(f"{server.url}/api/jobs", json={"prompt": "x", "webhook": hook})
        assert r.status_code == 422, r.text
        assert field in [e["field"] for e in r.json()["errors"]], r.json()
    job = create(server.url, webhook={"url": "http://127.0.0.1:9/", "events": ["failed"] * 2})
    assert job["webhook"]["events"] == ["failed"]
    spec = httpx.get(f"{server.url}/openapi.json").json()
    body = spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert "webhook" in body["schema"]["properties"]
    assert "/api/jobs/{job_id}/webhook-deliveries" in spec["paths"]


def test_cli_generate_sets_the_webhook(
    live_server: Callable[..., LiveServer], receiver: Receiver, tmp_path: Any
) -> None:
    server = live_server(**HOOKS)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    import os

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "safelight",
            "generate",
            "a red kite",
            "--steps",
            "2",
            "--server",
            server.url,
            "--webhook",
            receiver.url,
            "--webhook-events",
            "started,completed",
            "--detach",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    got = receiver.wait_for(2)
    types = [verify(secret_of(server), r.headers, r.body)["type"] for r in got]
    assert types == ["job.started", "job.completed"]
    assert {r.json["data"]["job_id"] for r in got} == {job_id}
