"""Small helpers the reliability scenarios share: reading the server's own gauges, its
memory, and waiting for conditions without timed assertions."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.chaos.conftest import Scenario
from tests.chaos.followers import Followed
from tests.conftest import LiveServer


def open_streams(server: LiveServer) -> dict[str, float]:
    """``safelight_open_streams`` by transport, read from the server (not via a proxy)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("safelight_open_streams{"):
            label = line.split('transport="', 1)[1].split('"', 1)[0]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


async def aopen_streams(server: LiveServer) -> dict[str, float]:
    return await asyncio.to_thread(open_streams, server)


def rss_mb(server: LiveServer) -> float:
    """Resident memory of the server process, from /proc."""
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


async def until(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> float | None:
    """Seconds until ``cond()`` held, or None if it never did within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return round(time.monotonic() - start, 3)
        await asyncio.sleep(step)
    return None


def raise_fd_limit(want: int) -> int:
    """Raise this process's open-file limit to ``want`` (children, such as the server,
    inherit it); root may raise the hard limit too, others get as far as it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def judge(run: Scenario, followers: list[Followed], last_seq: int, stuck: int = 0) -> None:
    """Count lost/duplicated/stuck for one trial and fail it with the reason."""
    lost = dup = 0
    for f in followers:
        f_lost, f_dup = f.check(last_seq)
        lost += f_lost
        dup += f_dup
        if f.seqs != sorted(f.seqs):
            run.fail(f"{f.kind} follower of {f.job_id} got events out of order")
        if f.errors:
            run.fail(f"{f.kind}: {f.errors[0]}")
        if f.resets:
            run.fail(f"{f.kind} follower got an unexpected reset")
    stuck += sum(1 for f in followers if f.terminal is None)
    run.count(lost=lost, duplicated=dup, stuck=stuck)


def assert_clean(run: Scenario) -> None:
    assert (run.lost, run.duplicated, run.stuck) == (0, 0, 0), run.row()
    assert run.passed == run.trials_run, run.row()
