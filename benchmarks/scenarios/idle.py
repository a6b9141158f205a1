"""Memory per idle stream: server VmRSS before and after K idle streams."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import httpx

from benchmarks.clients import WorkerSpec
from benchmarks.config import TARGET_IDLE_KB, console
from benchmarks.context import Bench
from benchmarks.procs import clients, proc_rss_kb, start_bare, start_safelight
from benchmarks.scenarios.fanout import stream_url
from benchmarks.stats import _round


# 3. memory per idle stream
def idle_memory(bench: Bench, server_kind: str, transport: str) -> dict[str, Any]:
    c = bench.cfg
    k = c.idle
    console.print(f"[bold]idle memory[/] {server_kind}/{transport}: {k} streams ...")
    log = bench.logs / f"idle-{server_kind}-{transport}.log"
    if server_kind == "app":
        server = start_safelight(
            f"idle-app-{transport}",
            bench.root / f"idle-{transport}",
            log,
            0,
            bench.app_settings(),
            c.server_src,
        )
    else:
        server = start_bare(f"idle-bare-{transport}", log)
    try:
        if server_kind == "app":
            r = httpx.post(
                f"{server.url}/api/jobs",
                json={"prompt": "idle", "steps": 10, "width": 64, "height": 64},
                trust_env=False,
            )
            r.raise_for_status()
            job = r.json()
            after = int(job["last_seq"])
            url = stream_url(server.port, job["id"], transport, after)
        else:
            after = 0
            url = f"{'ws' if transport == 'ws' else 'http'}://127.0.0.1:{server.port}/{transport}"
        spec = WorkerSpec(transport, url, after, k, "idle", c.connect_concurrency)
        # Warm-up: first use of every code path (lazy imports, caches) is not per-stream.
        with clients(replace(spec, count=min(20, k)), 1) as warm:
            warm.wait_for("connected", 120)
            warm.send("stop")
            warm.wait_for("closed", 60)
        time.sleep(1.0)
        before = proc_rss_kb(server.pid)
        # One client process holds up to ~2,500 idle streams in reasonable time.
        procs = max(c.idle_client_procs, min(4, -(-k // 2500)))
        with clients(spec, procs) as group:
            connected = group.wait_for("connected", max(300.0, k * 0.06))
            time.sleep(3.0 if transport == "poll" else 1.5)  # polls park after their first answer
            after_kb = proc_rss_kb(server.pid)
            healthz_ms = healthz_latency(server.url)
            group.send("stop")
            group.wait_for("closed", 120)
        time.sleep(1.0)
        closed_kb = proc_rss_kb(server.pid)
    finally:
        server.stop()
    ok = sum(x["ok"] for x in connected)
    if ok < k:
        bench.note(f"idle {server_kind}/{transport}: only {ok}/{k} streams opened")
    per = (after_kb - before) / ok if ok else None
    target = TARGET_IDLE_KB[transport]
    return {
        "server": server_kind,
        "transport": transport,
        "streams": ok,
        "requested": k,
        "rss_before_kb": before,
        "rss_open_kb": after_kb,
        "rss_after_close_kb": closed_kb,
        "kb_per_stream": _round(per),
        "target_kb": target if server_kind == "app" else None,
        "pass": (per is not None and per <= target) if server_kind == "app" else None,
        "healthz_ms_max": healthz_ms,
        "errors": {e: n for x in connected for e, n in x["errors"].items()},
    }


def healthz_latency(url: str, tries: int = 5) -> float:
    """The slowest of a few ``/healthz`` round trips while the streams sit open (ms)."""
    worst = 0.0
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
        for _ in range(tries):
            t0 = time.perf_counter()
            http.get("/healthz").raise_for_status()
            worst = max(worst, (time.perf_counter() - t0) * 1000)
    return round(worst, 2)
