"""The sender and the dispatcher against a real receiver and a real store: connect to the
checked address (DNS rebinding), no redirects, a capped response, lease fencing, and two
dispatchers sharing one PostgreSQL database without ever sending one delivery twice."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safelight.config import Settings
from safelight.errors import LeaseLost
from safelight.metrics import Metrics
from safelight.store import webhooks as rows
from safelight.store.runner import AsyncStore
from safelight.store.sql import SqlStore
from safelight.types import EventType, WebhookEvent
from safelight.webhooks import signing
from safelight.webhooks.dispatcher import Dispatcher
from safelight.webhooks.sender import Limits, send
from safelight.webhooks.ssrf import IPAddress, Policy, WebhookUrl
from tests.integration.receiver import Receiver, running
from tests.pgdb import PG, temp_database

LIMITS = Limits(connect_timeout_s=1.0, read_timeout_s=1.0, max_response_bytes=4096)
LOOPBACK = Policy.from_entries(["127.0.0.1/32"])


def answers(*ips: str):  # type: ignore[no-untyped-def]
    """A resolver for names the system cannot resolve (what a rebinding DNS would say)."""

    async def resolver(url: WebhookUrl, timeout_s: float) -> list[IPAddress]:
        return [ipaddress.ip_address(ip) for ip in ips]

    return resolver


def test_connects_to_the_address_that_was_checked() -> None:
    with running(Receiver()) as r:
        port = r.url.split(":")[2].split("/")[0]
        url = f"http://rebind.invalid:{port}/hook"
        result = asyncio.run(send(url, b"{}", {}, LOOPBACK, LIMITS, answers("127.0.0.1")))
        assert result.delivered, result
        (got,) = r.received
        # The socket went to 127.0.0.1; the request still names the URL's host.
        assert got.headers["host"] == f"rebind.invalid:{port}"


def test_a_name_answering_a_private_address_at_send_time_is_blocked() -> None:
    with running(Receiver()) as r:
        port = r.url.split(":")[2].split("/")[0]
        url = f"http://public.invalid:{port}/hook"
        for ips in (("127.0.0.1",), ("93.184.216.34", "127.0.0.1")):
            result = asyncio.run(send(url, b"{}", {}, Policy(), LIMITS, answers(*ips)))
            assert result.blocked and not result.delivered
            assert "loopback" in (result.error or "")
        assert r.received == []


def test_redirects_are_not_followed() -> None:
    with running(Receiver(default=302)) as r:
        result = asyncio.run(send(r.url, b"{}", {}, LOOPBACK, LIMITS))
        assert result.status_code == 302 and not result.delivered
        assert "redirects are not followed" in (result.error or "")
        assert len(r.received) == 1


def test_an_endless_response_head_is_cut_off() -> None:
    async def scenario() -> str | None:
        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\n")
            try:
                for _ in range(200):
                    writer.write(b"X-Filler: " + b"a" * 1000 + b"\r\n")
                    await writer.drain()
            except OSError:
                pass
            writer.close()

        server = await asyncio.start_server(endless, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await send(f"http://127.0.0.1:{port}/", b"{}", {}, LOOPBACK, LIMITS)
        assert not result.delivered
        return result.error

    error = asyncio.run(scenario())
    assert error is not None and ("over" in error or "Error" in error)


# -- the store: outbox rows and fencing --------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hooks.db'}"
        return
    with temp_database("safelight_hooks") as name:
        yield f"{PG}/{name}"


def new_job(store: SqlStore, webhook: tuple[str, list[WebhookEvent]] | None = None) -> str:
    job, _ = store.create_job(
        settings={"prompt": "p"},
        parent_id=None,
        manage_token_hash="h",
        max_attempts=3,
        queue_limit=1000,
        webhook=webhook,
    )
    return job.id


def started_jobs(store: SqlStore, url: str, n: int) -> list[str]:
    """n jobs whose webhook wants ``started``; claiming each commits that event."""
    ids = [new_job(store, (url, [WebhookEvent.STARTED])) for _ in range(n)]
    for _ in range(n):
        assert store.claim("w", 60_000) is not None
    return ids


def test_delivery_commits_with_its_event_and_a_stale_claim_is_fenced(store_url: str) -> None:
    store = SqlStore(store_url)
    try:
        (job_id,) = started_jobs(store, "http://127.0.0.1:9/", 1)
        assert rows.pending_count(store) == 1  # queued is not subscribed; running is
        (a,) = rows.claim(store, "node-a", 1, 10)
        time.sleep(0.02)  # a's lease (1 ms, database clock) lapses
        (b,) = rows.claim(store, "node-b", 60_000, 10)
        assert b.id == a.id and b.token != a.token
        result = dict(latency_ms=5, status_code=200, error=None, delivered=True, blocked=False)
        with pytest.raises(LeaseLost):
            rows.record_attempt(
                store, a, node="node-a", retry_in_ms=10, retry_for_ms=1000, **result
            )  # type: ignore[arg-type]
        outcome = rows.record_attempt(
            store, b, node="node-b", retry_in_ms=10, retry_for_ms=1000, **result
        )  # type: ignore[arg-type]
        assert outcome.value == "delivered"
        (item,) = rows.list_deliveries(store, job_id, 10)
        assert item["status"] == "delivered"
        assert [t["node"] for t in item["attempts"]] == ["node-b"]
        assert rows.claim(store, "node-a", 60_000, 10) == []
    finally:
        store.close()


def test_only_an_event_that_queued_a_delivery_wakes_the_dispatcher(
    store_url: str, tmp_path: Path
) -> None:
    """Progress of a job without a webhook must not cost the dispatcher a store read per
    event (it did: every progress woke it); events read back keep waking it (maybe)."""
    sync = SqlStore(store_url)
    store = AsyncStore(sync)
    try:
        (hooked,) = started_jobs(sync, "http://127.0.0.1:9/", 1)
        plain = new_job(sync)
        claimed = sync.claim("w", 60_000)
        assert claimed is not None and claimed[0].id == plain
        running = claimed[1][-1]
        assert running.type.value == "running" and running.webhook_queued is False
        _, progress = sync.worker_event(
            plain, claimed[0].lease_token or "", EventType.PROGRESS, {"step": 1}
        )
        assert progress.webhook_queued is False
        (started,) = [e for e in sync.read_events(hooked, 0) if e.type is EventType.RUNNING]
        assert started.webhook_queued is True  # read back: unknown, so maybe

        dispatcher = Dispatcher(
            Settings(data_dir=tmp_path), store, Metrics(), signing.new_secret(), "n"
        )
        dispatcher.notice([running, progress])
        assert not dispatcher.wake.is_set()
        dispatcher.notice([started])
        assert dispatcher.wake.is_set()
    finally:
        store.close()


@pytest.mark.postgres
def test_two_dispatchers_never_send_one_delivery_at_once(pg_database: str, tmp_path: Path) -> None:
    store_url = pg_database
    n = 30
    settings = Settings(
        data_dir=tmp_path,
        database_url=store_url,
        webhook_allowed_hosts=("127.0.0.1",),
        webhook_poll_s=0.02,
        webhook_concurrency=4,
        webhook_lease_s=5.0,
        webhook_connect_timeout_s=1.0,
        webhook_read_timeout_s=2.0,
    )
    secret = signing.new_secret()
    with running(Receiver(hold_s=0.03)) as receiver:
        seed = SqlStore(store_url)
        started_jobs(seed, receiver.url, n)
        seed.close()

        async def scenario() -> None:
            stores = [AsyncStore(SqlStore(store_url)) for _ in range(2)]
            nodes = [
                Dispatcher(settings, s, Metrics(), secret, f"node-{i}")
                for i, s in enumerate(stores)
            ]
            tasks = [asyncio.create_task(d.run()) for d in nodes]
            deadline = time.monotonic() + 30
            while await stores[0].read(rows.pending_count) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in stores:
                s.close()

        asyncio.run(scenario())
        check = SqlStore(store_url)
        try:
            assert rows.pending_count(check) == 0
            ids = [r.id for r in receiver.received]
            assert len(ids) == n and len(set(ids)) == n  # each delivery sent exactly once
            assert receiver.overlaps == 0
            senders = {
                a["node"]
                for job in {r.json["data"]["job_id"] for r in receiver.received}
                for d in rows.list_deliveries(check, job, 10)
                for a in d["attempts"]
            }
            assert senders == {"node-0", "node-1"}  # both nodes took part
        finally:
            check.close()


def test_a_name_that_does_not_resolve_is_retried_not_blocked() -> None:
    async def nothing(url: WebhookUrl, timeout_s: float) -> list[IPAddress]:
        return []

    result = asyncio.run(send("http://gone.invalid/", b"{}", {}, Policy(), LIMITS, nothing))
    assert not result.blocked and not result.delivered
    assert "did not resolve" in (result.error or "")


# -- https: connect to the checked address, verify the certificate for the host name ----


def make_ca_and_cert(tmp_path: Path, host: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``host`` (openssl CLI)."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=safelight test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", f"/CN={host}")  # fmt: skip
    (tmp_path / "ext.cnf").write_text(f"subjectAltName=DNS:{host}\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    return tmp_path / "ca.pem", tmp_path / "srv.pem", tmp_path / "srv.key"


def test_https_verifies_the_host_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    import ssl

    from safelight.webhooks.sender import tls_context

    ca, cert, key = make_ca_and_cert(tmp_path, "hooks.invalid")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def scenario() -> list[tuple[bool, str | None]]:
        seen: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                seen.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
        port = server.sockets[0].getsockname()[1]
        trusted = Limits(1.0, 1.0, 4096, tls_context(str(ca)))
        out = []
        async with server:
            for url, limits in (
                (f"https://hooks.invalid:{port}/x", trusted),  # right name, trusted CA
                (f"https://other.invalid:{port}/x", trusted),  # name not on the cert
                (f"https://hooks.invalid:{port}/x", LIMITS),  # CA not trusted
            ):
                result = await send(url, b"{}", {}, LOOPBACK, limits, answers("127.0.0.1"))
                out.append((result.delivered, result.error))
        assert len(seen) == 1 and b"Host: hooks.invalid:" in seen[0]
        return out

    (ok, _), (wrong_name, e1), (untrusted, e2) = asyncio.run(scenario())
    assert ok
    assert not wrong_name and "CERTIFICATE" in (e1 or "").upper()
    assert not untrusted and "CERTIFICATE" in (e2 or "").upper()
