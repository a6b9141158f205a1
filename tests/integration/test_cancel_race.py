"""issue 12 regression: a cancel that races the end of a job gets ONE consistent answer:
``202`` and the job ends ``cancelled``, or ``409 already_completed`` and it stays
``completed`` - never a 202 followed by ``completed``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import httpx

from tests.conftest import LiveServer
from tests.integration.helpers import create, get, wait_status


def test_regression_a_202_cancel_near_the_end_always_ends_cancelled(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(step_delay_s=0.01, progress_interval_s=0.0)
    rng = random.Random(12)
    answers: dict[tuple[int, str], int] = {}
    for _ in range(20):
        job = create(server.url, steps=6, num_images=2, width=256, height=256)
        wait_status(server.url, job["id"], {"running", "uploading", "completed"})
        # Aim at the last steps and the upload, where the race was.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = get(server.url, job["id"])
            if seen["status"] != "running" or (seen["progress"] or {}).get("step", 0) >= 5:
                break
        time.sleep(rng.uniform(0, 0.03))
        r = httpx.post(
            f"{server.url}/api/jobs/{job['id']}/cancel",
            headers={"Authorization": f"Bearer {job['manage_token']}"},
            timeout=10,
        )
        final = wait_status(server.url, job["id"], {"completed", "failed", "cancelled"})
        if r.status_code == 202:
            assert final["status"] == "cancelled", (r.json()["status"], final["status"])
        else:
            assert r.status_code == 409 and r.json()["code"] == "already_completed", r.text
            assert final["status"] == "completed"
        key = (r.status_code, final["status"])
        answers[key] = answers.get(key, 0) + 1
    print("cancel race outcomes:", answers)
