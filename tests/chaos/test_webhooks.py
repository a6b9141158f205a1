"""Webhook reliability: the sender is SIGKILLed at a random moment while jobs run and
deliveries are in flight; after a restart every subscribed event of every job reaches the
receiver (lost = 0).  At-least-once allows the receiver to see a delivery twice (a kill
between the receiver's 200 and the commit of that attempt); that is reported as a figure,
while a delivery *recorded* as delivered twice would count as duplicated."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import LiveServer
from tests.integration.helpers import create
from tests.integration.receiver import Receiver, running

SETTINGS: dict[str, Any] = {
    "step_delay_s": 0.02,
    "webhook_allowed_hosts": "127.0.0.1",
    "webhook_backoff_base_s": 0.05,
    "webhook_backoff_max_s": 0.2,
    "webhook_poll_s": 0.05,
    "webhook_connect_timeout_s": 1.0,
    "webhook_read_timeout_s": 1.0,
    "webhook_lease_s": 3.0,
}
EVENTS = ["started", "completed", "failed", "cancelled"]
TYPE_OF = {"running": "started", "completed": "completed", "failed": "failed"}


def test_w1_sender_killed_with_deliveries_pending(
    scenario: Any, live_server: Callable[..., LiveServer]
) -> None:
    run = scenario("W1", "webhook sender SIGKILLed mid-delivery: nothing lost", trials=2)
    rng = random.Random(9)
    repeats = 0
    for _ in run.trials():
        with running(Receiver(hold_s=0.02)) as receiver:
            server = live_server(**SETTINGS)
            jobs = [
                create(server.url, steps=8, webhook={"url": receiver.url, "events": EVENTS})
                for _ in range(4)
            ]
            time.sleep(rng.uniform(0.05, 0.4))
            server.kill()
            server.start()
            deadline = time.monotonic() + 60
            lost = stuck = duplicated = 0
            for job in jobs:
                while True:
                    status = httpx.get(f"{server.url}/api/jobs/{job['id']}").json()["status"]
                    hooks = httpx.get(
                        f"{server.url}/api/jobs/{job['id']}/webhook-deliveries"
                    ).json()["deliveries"]
                    settled = all(d["status"] != "pending" for d in hooks)
                    if status in ("completed", "failed", "cancelled") and settled:
                        break
                    if time.monotonic() > deadline:
                        stuck += 1
                        break
                    time.sleep(0.05)
                log = httpx.get(f"{server.url}/api/jobs/{job['id']}/events").json()["events"]
                wanted = {e["seq"] for e in log if e["type"] in TYPE_OF}
                delivered = {d["seq"] for d in hooks if d["status"] == "delivered"}
                lost += len(wanted - delivered)
                duplicated += sum(
                    1 for d in hooks if sum(a["outcome"] == "delivered" for a in d["attempts"]) > 1
                )
                got = {
                    r.json["data"]["seq"]
                    for r in receiver.received
                    if r.json["data"]["job_id"] == job["id"]
                }
                lost += len(wanted - got)
            repeats += sum(n - 1 for n in Counter(r.id for r in receiver.received).values())
            run.count(lost=lost, duplicated=duplicated, stuck=stuck)
            server.stop()
            assert (lost, duplicated, stuck) == (0, 0, 0)
    run.figure("receiver_repeats", repeats)
