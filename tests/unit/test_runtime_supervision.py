"""A background loop that dies is never silent: the node reports it (readiness), stops
itself (``on_crash``) and ``stop()`` still names it - issue 13, "a database restart must
never wedge a node"."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from safelight.config import Settings
from safelight.runtime import Runtime


def test_a_dead_loop_stops_the_node_and_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, concurrency=1, reaper_interval_s=0.05)
    crashes: list[str] = []

    async def scenario() -> list[str]:
        runtime = Runtime.build(settings)
        runtime.on_crash = lambda: crashes.append("stop")
        await runtime.start()
        assert runtime.problems() == []

        async def broken() -> None:
            raise RuntimeError("a bug in a loop")

        runtime._spawn(broken(), "broken-loop")
        for _ in range(100):
            if crashes:
                break
            await asyncio.sleep(0.01)
        problems = runtime.problems()
        await runtime.stop()
        return problems

    with caplog.at_level(logging.ERROR, logger="safelight"):
        problems = asyncio.run(scenario())
    assert crashes == ["stop"]
    assert problems == ["background task broken-loop died"]
    assert "a bug in a loop" in caplog.text  # the exception itself is logged


def test_a_clean_stop_is_not_a_crash(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, concurrency=2, reaper_interval_s=0.05)

    async def scenario() -> Runtime:
        runtime = Runtime.build(settings)
        runtime.on_crash = lambda: pytest.fail("on_crash on a clean stop")
        await runtime.start()
        await asyncio.sleep(0.05)
        await runtime.stop()
        return runtime

    assert asyncio.run(scenario()).crashed == []


@pytest.mark.postgres
def test_a_node_without_its_listen_connection_is_not_ready(tmp_path: Path) -> None:
    from tests.pgdb import temp_database
    from tests.pgproxy import PgProxy

    proxy = PgProxy()

    async def scenario(url: str) -> list[list[str]]:
        settings = Settings(
            data_dir=tmp_path, database_url=url, concurrency=0, listener_probe_s=0.2
        )
        runtime = Runtime.build(settings)
        assert runtime.listener is not None
        seen = [runtime.problems()]  # not started: not listening yet
        await runtime.start()
        await asyncio.wait_for(runtime.listener.connected.wait(), 10)
        seen.append(runtime.problems())
        proxy.cut()  # the LISTEN connection drops; reconnects are refused
        for _ in range(200):
            if not runtime.listener.connected.is_set():
                break
            await asyncio.sleep(0.02)
        seen.append(runtime.problems())
        proxy.restore()
        await asyncio.wait_for(runtime.listener.connected.wait(), 10)
        seen.append(runtime.problems())
        await runtime.stop()
        return seen

    try:
        with temp_database() as name:
            seen = asyncio.run(scenario(proxy.url(name)))
    finally:
        proxy.close()
    down = ["not listening for events (database connection lost)"]
    assert seen == [down, [], down, []]
