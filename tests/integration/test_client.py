"""The Python client against a real server (the ``live_server`` fixture, fast settings)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from safelight.client import AsyncClient, Client, Event, StreamSettings
from safelight.errors import (
    Conflict,
    Forbidden,
    MaxAttemptsReached,
    NotFound,
    ValidationFailed,
)
from safelight.types import JobStatus, Transport

# Quick to notice trouble, quick to recover: each test takes about a second.
FAST_STREAM = StreamSettings(
    ws_open_timeout_s=2.0,
    sse_open_timeout_s=2.0,
    poll_open_timeout_s=5.0,
    dead_after_s=5.0,
    backoff_base_s=0.05,
    backoff_cap_s=0.3,
    probe_interval_s=0.5,
    long_poll_s=2.0,
    give_up_after_s=30.0,
)

Factory = Callable[..., Any]


def client_for(server: Any) -> Client:
    return Client(server.url, stream_settings=FAST_STREAM, retry_backoff_s=0.05)


def assert_whole_log(events: list[Event]) -> None:
    """Seq 1..N, each exactly once, in order, ending at a terminal event."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].terminal


def test_generate_saves_a_png_of_the_requested_size(live_server: Factory, tmp_path: Path) -> None:
    server = live_server()
    with client_for(server) as client:
        job = client.create("a lighthouse at dusk", width=96, height=64, steps=6, num_images=2)
        assert job.manage_token
        assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        with client.events(job.id) as stream:
            events = list(stream)
            assert stream.transport is Transport.WS
        assert_whole_log(events)
        assert events[-1].type == "completed"
        assert {e.transport for e in events} == {Transport.WS}
        types = [e.type for e in events]
        assert types[0] == "queued"
        assert "running" in types
        assert "progress" in types
        paths = client.download(job.id, tmp_path)
    assert len(paths) == 2
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (96, 64)


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [("sse,poll", Transport.SSE), ("poll", Transport.POLL), ("ws,poll", Transport.WS)],
)
def test_ladder_falls_back_to_what_the_server_offers(
    live_server: Factory, enabled: str, expected: Transport
) -> None:
    server = live_server(transports=enabled)
    with client_for(server) as client:
        assert client.options()["transports"] == enabled.split(",")
        job = client.create("fallback", width=64, height=64, steps=4)
        with client.events(job.id) as stream:
            events = list(stream)
            assert stream.transport is expected
    assert_whole_log(events)
    assert {e.transport for e in events} == {expected}


def test_sse_disabled_answers_transport_disabled(live_server: Factory) -> None:
    server = live_server(transports="ws,poll")
    response = httpx.get(f"{server.url}/api/jobs/whatever/stream")
    assert response.status_code == 404
    assert response.json()["code"] == "transport_disabled"


@pytest.mark.parametrize("transport", list(Transport))
def test_each_forced_transport_delivers_the_whole_log(
    live_server: Factory, transport: Transport
) -> None:
    server = live_server()
    with client_for(server) as client:
        job = client.create("forced", width=64, height=64, steps=5)
        with client.events(job.id, transport=transport) as stream:
            events = list(stream)
    assert_whole_log(events)
    assert {e.transport for e in events} == {transport}


def test_resume_after_the_server_is_killed_mid_job(live_server: Factory) -> None:
    server = live_server(step_delay_s=0.03)
    with client_for(server) as client:
        job = client.create("survive a crash", width=64, height=64, steps=60)
        events: list[Event] = []
        killed = False
        with client.events(job.id) as stream:
            for event in stream:
                events.append(event)
                if not killed and event.type == "progress" and event.data["step"] >= 3:
                    server.kill()
                    killed = True
                    server.start()
        final = client.get(job.id)
    assert killed
    assert_whole_log(events)
    assert events[-1].type == "completed"
    assert final.status is JobStatus.COMPLETED
    # The lost worker's attempt was replaced by a new one, and that was streamed too.
    assert "retry" in [e.type for e in events]
    assert final.attempt == 2


@pytest.mark.anyio
@pytest.mark.parametrize("transport", [None, *Transport])
async def test_resume_after_the_client_drops_its_connection(
    live_server: Factory, transport: Transport | None
) -> None:
    server = live_server(step_delay_s=0.02)
    async with AsyncClient(server.url, stream_settings=FAST_STREAM) as client:
        job = await client.create("drop and resume", width=64, height=64, steps=40)
        events: list[Event] = []
        async with client.events(job.id, transport=transport) as stream:
            async for event in stream:
                events.append(event)
                if event.seq in (3, 8, 15):
                    await stream.reconnect()
    assert_whole_log(events)
    assert events[-1].type == "completed"
    if transport is not None:
        assert {e.transport for e in events} == {transport}


def test_typed_errors(live_server: Factory) -> None:
    server = live_server(max_attempts=2)
    with client_for(server) as client:
        with pytest.raises(NotFound):
            client.get("doesNotExistAtAll0000000")
        with pytest.raises(ValidationFailed) as info:
            client.create("   ", steps=0, width=65)
        fields = {e["field"] for e in info.value.errors}
        assert {"prompt", "steps", "width"} <= fields

        job = client.create("[[fail:provider@1#*]] always fails", width=64, height=64, steps=3)
        done = client.wait(job.id)
        assert done.status is JobStatus.FAILED
        assert done.error is not None
        assert done.error.retryable
        with pytest.raises(Forbidden):
            client.retry(job.id, token="not-the-token")
        assert client.retry(job.id).attempt == 2
        done = client.wait(job.id, after=done.last_seq)
        assert done.status is JobStatus.FAILED
        assert done.attempt == 2
        with pytest.raises(MaxAttemptsReached) as at_cap:
            client.retry(job.id)
        assert at_cap.value.status == 409
        assert at_cap.value.code == "max_attempts_reached"

        # The whole log, watched later: the first failure is history, not the end.
        with client.events(job.id) as stream:
            types = [e.type for e in stream]
        assert types.count("failed") == 2
        assert types[-1] == "failed"
        assert "retry" in types

        ok = client.create("fine", width=64, height=64, steps=2)
        client.wait(ok.id)
        with pytest.raises(Conflict) as conflict:
            client.cancel(ok.id)
        assert conflict.value.code == "already_completed"


def test_cancel_mid_run_ends_with_cancelled(live_server: Factory) -> None:
    server = live_server()
    with client_for(server) as client:
        job = client.create("stop me", width=64, height=64, steps=150)
        types: list[str] = []
        with client.events(job.id) as stream:
            for event in stream:
                types.append(event.type)
                if event.type == "progress" and "cancel_requested" not in types:
                    client.cancel(job.id)
                    types.append("(asked)")
        assert types[-1] == "cancelled"
        assert "cancel_requested" in types
        assert client.get(job.id).status is JobStatus.CANCELLED
        assert client.cancel(job.id).status is JobStatus.CANCELLED  # idempotent


def test_restart_and_idempotency(live_server: Factory) -> None:
    server = live_server()
    with client_for(server) as client:
        parent = client.create("parent", width=64, height=64, steps=2, idempotency_key="k-1")
        again = client.create("parent", width=64, height=64, steps=2, idempotency_key="k-1")
        assert again.id == parent.id
        client.wait(parent.id)
        child = client.restart(parent.id, steps=3)
        assert child.parent_id == parent.id
        assert child.id != parent.id
        parent_job = client.get(parent.id)
        assert child.settings.steps == 3
        assert child.settings.seed == parent_job.settings.seed
        assert child.settings.prompt == "parent"
        assert client.wait(child.id).status is JobStatus.COMPLETED


def test_sync_and_async_clients_agree_while_many_watch(live_server: Factory) -> None:
    """Several watchers on different transports see the same log."""
    server = live_server(step_delay_s=0.02)
    with client_for(server) as client:
        job = client.create("many eyes", width=64, height=64, steps=20)
        results: dict[str, list[int]] = {}

        async def watch_async(transport: Transport) -> None:
            c = AsyncClient(server.url, stream_settings=FAST_STREAM)
            async with c, c.events(job.id, transport=transport) as s:
                results[f"async-{transport}"] = [e.seq async for e in s]

        def watch_sync(transport: Transport) -> None:
            with client.events(job.id, transport=transport) as s:
                results[f"sync-{transport}"] = [e.seq for e in s]

        threads = [threading.Thread(target=watch_sync, args=(t,)) for t in Transport]
        for thread in threads:
            thread.start()

        async def all_async() -> None:
            await asyncio.gather(*(watch_async(t) for t in Transport))

        asyncio.run(all_async())
        for thread in threads:
            thread.join(30)
    assert len(results) == 6
    first = next(iter(results.values()))
    assert first == list(range(1, len(first) + 1))
    assert all(seqs == first for seqs in results.values()), results


def test_png_bytes_are_a_png(live_server: Factory) -> None:
    server = live_server()
    with client_for(server) as client:
        job = client.wait(client.create("bytes", width=64, height=64, steps=2).id)
        image = job.images[0]
        response = client.http.get(image.url)
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    Image.open(io.BytesIO(response.content)).verify()


@pytest.mark.parametrize("transport", list(Transport))
def test_cursor_beyond_the_log_resets_from_the_job(
    live_server: Factory, transport: Transport
) -> None:
    server = live_server()
    with client_for(server) as client:
        job = client.wait(client.create("reset", width=64, height=64, steps=2).id)
        with client.events(job.id, after=job.last_seq + 50, transport=transport) as stream:
            assert list(stream) == []
            if transport is Transport.SSE:
                # The server answers 204 (nothing more, ever) rather than a reset welcome
                # for a finished job, so a browser EventSource stops: the stream just ends.
                return
            assert stream.resets == 1
            assert stream.job is not None
            assert stream.job.status is JobStatus.COMPLETED
            assert stream.cursor == job.last_seq
