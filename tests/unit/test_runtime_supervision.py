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
