"""R6 and R7: real WebSocket and SSE followers behind a userspace fault proxy.

R6 blackholes the route (no FIN, no RST) while the job runs: followers must notice through
their ping watchdog, reconnect once the route is back and resume from their cursor; the
server must free the dead subscribers.  R7 resets connections at random byte offsets
(handshakes and frames cut mid-way), many times per job.  Both check every follower's
delivered seq list against the job's log: exactly 1..last_seq, in order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.chaos.common import aopen_streams, assert_clean, judge, until
from tests.chaos.conftest import full_scale
from tests.chaos.faultproxy import FaultProxy
from tests.chaos.followers import Followed, FollowSettings, follow, p99, unlimited_http
from tests.conftest import LiveServer
from tests.integration.helpers import create, get

Factory = Callable[..., LiveServer]

# The server pings (application and WebSocket protocol) every 0.5 s; a follower that
# hears nothing for 1.5 s declares the connection dead.
NET = {
    "step_delay_s": 0.02,
    "ping_interval_s": 0.5,
    "ws_ping_interval_s": 0.5,
    "ws_ping_timeout_s": 0.5,
    "send_timeout_s": 1.0,
    "max_streams_per_client": 10_000,
}
WATCHDOG = FollowSettings(dead_after_s=1.5, open_timeout_s=1.0, backoff_cap_s=0.5)


async def _blackhole_trial(
    server: LiveServer, n_ws: int, n_sse: int, outage_s: float, rng: random.Random
) -> dict[str, Any]:
    proxy = await FaultProxy(server.port, rng=rng).start()
    job = await asyncio.to_thread(create, server.url, steps=150, width=64, height=64)
    async with unlimited_http(proxy.url) as http:
        followers = [Followed("ws", job["id"]) for _ in range(n_ws)]
        followers += [Followed("sse", job["id"]) for _ in range(n_sse)]
        tasks = [
            asyncio.create_task(
                follow(f.kind, proxy.url, job["id"], http, settings=WATCHDOG, rng=rng, out=f)
            )
            for f in followers
        ]
        ready = await until(lambda: all(len(f.seqs) >= 3 for f in followers), 20)
        assert ready is not None, "followers never started receiving"
        streams: dict[str, float] = {}
        proxy.blackhole()
        cut = time.monotonic()
        noticed = await until(lambda: all(f.broken_at is not None for f in followers), outage_s)
        freed: dict[str, float | None] = {"ws": None, "sse": None}
        while time.monotonic() - cut < outage_s:
            streams = await aopen_streams(server)
            for kind in freed:
                if freed[kind] is None and streams.get(kind, 0) == 0:
                    freed[kind] = round(time.monotonic() - cut, 2)
            await asyncio.sleep(0.1)
        proxy.pass_()
        back = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await proxy.close()
    last_seq = (await asyncio.to_thread(get, server.url, job["id"]))["last_seq"]
    resumed = [f.welcomed_at - back for f in followers if f.welcomed_at and f.outages]
    return {
        "followers": followers,
        "last_seq": last_seq,
        "noticed_s": noticed,
        "freed": freed,
        "resumed": resumed,
    }


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r6_blackhole_followers_notice_and_resume(live_server: Factory, scenario: Any) -> None:
    full = full_scale()
    n_ws, n_sse = (20, 20) if full else (5, 5)
    outages = (3.0, 15.0) if full else (3.0,)
    run = scenario("R6", f"blackhole (no FIN/RST) {n_ws} WS + {n_sse} SSE", trials=1)
    # One server per outage length: 150 steps (the cap) must outlast the outage.
    servers = {o: live_server(**{**NET, "step_delay_s": (o + 4) / 150}) for o in outages}
    rng = random.Random(6)
    noticed: list[float] = []
    resumed: list[float] = []
    freed_ws: list[float] = []
    sse_freed_during = 0
    for trial in run.trials():
        outage = outages[trial % len(outages)]
        result = asyncio.run(_blackhole_trial(servers[outage], n_ws, n_sse, outage, rng))
        judge(run, result["followers"], result["last_seq"])
        if result["noticed_s"] is None:
            run.fail(f"not every follower noticed a {outage:g} s blackhole")
        else:
            noticed.append(result["noticed_s"])
        resumed += result["resumed"]
        if result["freed"]["ws"] is None:
            run.fail("server kept blackholed WebSocket subscribers for the whole outage")
        else:
            freed_ws.append(result["freed"]["ws"])
        sse_freed_during += result["freed"]["sse"] is not None
    run.figure("outages_s", "/".join(f"{o:g}" for o in outages))
    run.figure("all_noticed_max_s", max(noticed) if noticed else None)
    run.figure("ws_freed_by_server_max_s", max(freed_ws) if freed_ws else None)
    run.figure("sse_freed_during_outage", f"{sse_freed_during}/{run.trials_run}")
    run.figure("resume_after_link_p99_s", p99(resumed))
    assert_clean(run)


async def _reset_trial(
    server: LiveServer, n_ws: int, n_sse: int, rng: random.Random
) -> tuple[list[Followed], int, int]:
    proxy = await FaultProxy(server.port, rng=rng).start()
    proxy.reset(1, 8000)
    job = await asyncio.to_thread(create, server.url, steps=120, width=64, height=64)
    async with unlimited_http(proxy.url) as http:
        followers = [Followed("ws", job["id"]) for _ in range(n_ws)]
        followers += [Followed("sse", job["id"]) for _ in range(n_sse)]
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    follow(f.kind, proxy.url, job["id"], http, settings=WATCHDOG, rng=rng, out=f)
                    for f in followers
                )
            ),
            120,
        )
    await proxy.close()
    last_seq = (await asyncio.to_thread(get, server.url, job["id"]))["last_seq"]
    return followers, last_seq, proxy.resets


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r7_resets_at_random_offsets(live_server: Factory, scenario: Any) -> None:
    run = scenario("R7", "RST at random byte offsets, WS + SSE", trials=2)
    server = live_server(**NET)
    rng = random.Random(7)
    resets = 0
    outages: list[float] = []
    for _ in run.trials():
        followers, last_seq, n = asyncio.run(_reset_trial(server, 3, 3, rng))
        judge(run, followers, last_seq)
        resets += n
        outages += [o for f in followers for o in f.outages]
    run.figure("resets", resets)
    run.figure("reconnect_p99_s", p99(outages))
    assert resets >= 20 * run.trials_run, f"too few resets to prove anything: {resets}"
    assert_clean(run)
    # The server is still healthy and holds no stream from the dead connections.
    assert httpx.get(f"{server.url}/readyz").status_code == 200
