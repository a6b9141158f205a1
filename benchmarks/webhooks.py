"""Webhook lag: from an event's commit (its ``ts``) to its delivery at a real receiver.

Embedded server (subprocess), loopback receiver allowed through the allowlist, 40 jobs
with ``started`` + ``completed`` webhooks on 2 worker slots; ``webhook_poll_s`` is left at
1 s so the figure shows the wake-on-commit path, not polling.

    PYTHONPATH=src python benchmarks/webhooks.py
"""

import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import FAST, LiveServer
from tests.integration.receiver import Receiver, running

N = int(sys.argv[1]) if len(sys.argv) > 1 else 40
with running(Receiver()) as r:
    s = LiveServer(
        Path(tempfile.mkdtemp()) / "d",
        {**FAST, "webhook_allowed_hosts": "127.0.0.1", "webhook_poll_s": 1.0, "concurrency": 2},
    ).start()
    try:
        for _ in range(N):
            httpx.post(
                s.url + "/api/jobs",
                json={
                    "prompt": "x",
                    "steps": 3,
                    "width": 64,
                    "height": 64,
                    "webhook": {"url": r.url, "events": ["started", "completed"]},
                },
            )
        got = r.wait_for(2 * N, timeout=120)
        lags = sorted(
            (x.at - datetime.fromisoformat(x.json["data"]["ts"].replace("Z", "+00:00")).timestamp())
            * 1000
            for x in got
        )
        q = statistics.quantiles(lags, n=100)
        print(f"deliveries={len(lags)} p50={q[49]:.1f} ms p95={q[94]:.1f} ms max={lags[-1]:.1f} ms")
    finally:
        s.stop()
