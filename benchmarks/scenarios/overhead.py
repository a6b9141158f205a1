"""What progress and previews add to a generation (builtin provider, through the app).

Two servers side by side with the same builtin job: one with the production defaults
(progress every 0.2 s, a preview every 1 s), one with both turned off (intervals longer
than the job: only the lifecycle events are written).  Rounds alternate between them so
drift and other people's load hit both alike.  Per job: wall time from ``started_at`` to
``finished_at`` (what a user waits) and server CPU while it ran (all threads, /proc).
Nobody watches: this is the cost of producing the events, not of delivering them (that is
the fan-out scenario).  The diffusers provider's overhead is ``scripts/bench-diffusers``.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

import httpx

from benchmarks.config import console
from benchmarks.context import Bench
from benchmarks.procs import Server, proc_cpu_s, start_safelight

STEPS = 60
STEP_DELAY_S = 0.05
SIZE = 256
OFF = 1e6  # an interval no job reaches


def _job(server: Server, http: httpx.Client) -> tuple[float, float]:
    cpu0 = proc_cpu_s(server.pid)
    r = http.post(
        "/api/jobs",
        json={
            "prompt": "overhead: a lighthouse at dusk",
            "steps": STEPS,
            "width": SIZE,
            "height": SIZE,
            "seed": 7,
        },
    )
    r.raise_for_status()
    job = r.json()
    while job["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.05)
        job = http.get(f"/api/jobs/{job['id']}").json()
    cpu = proc_cpu_s(server.pid) - cpu0
    if job["status"] != "completed":
        raise RuntimeError(f"overhead job ended {job['status']}")
    started = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00"))
    return (finished - started).total_seconds(), cpu


def overhead(bench: Bench) -> dict[str, Any]:
    rounds = bench.cfg.overhead_rounds
    console.print(
        f"[bold]progress + previews overhead[/] builtin, {STEPS} steps x "
        f"{STEP_DELAY_S * 1000:.0f} ms, {SIZE}x{SIZE}, {rounds} rounds ..."
    )
    base = {**bench.app_settings(), "step_delay_s": STEP_DELAY_S}
    variants = {
        "with": {**base, "progress_interval_s": 0.2, "preview_interval_s": 1.0},
        "without": {**base, "progress_interval_s": OFF, "preview_interval_s": OFF},
    }
    servers = {
        name: start_safelight(
            f"overhead-{name}",
            bench.root / f"overhead-{name}",
            bench.logs / f"overhead-{name}.log",
            1,
            settings,
            bench.cfg.server_src,
        )
        for name, settings in variants.items()
    }
    wall: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    try:
        clients = {
            name: httpx.Client(base_url=s.url, timeout=60, trust_env=False)
            for name, s in servers.items()
        }
        for name in servers:  # warm-up, not timed (first render, imports)
            _job(servers[name], clients[name])
        for _ in range(rounds):
            for name in servers:
                w, c = _job(servers[name], clients[name])
                wall[name].append(w)
                cpu[name].append(c)
        for client in clients.values():
            client.close()
    finally:
        for server in servers.values():
            server.stop()

    def pct(values: dict[str, list[float]]) -> float:
        a, b = statistics.median(values["with"]), statistics.median(values["without"])
        return round(100.0 * (a - b) / b, 2) if b else 0.0

    return {
        "steps": STEPS,
        "step_delay_s": STEP_DELAY_S,
        "size": SIZE,
        "rounds": rounds,
        "wall_s": {k: [round(x, 3) for x in v] for k, v in wall.items()},
        "cpu_s": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "wall_overhead_pct": pct(wall),
        "cpu_overhead_pct": pct(cpu),
        "target_pct": 3.0,
        "pass": pct(wall) <= 3.0,
    }
