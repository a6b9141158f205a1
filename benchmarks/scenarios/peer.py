"""Side by side with Gradio: the same workload on both servers, in one run.

K users each start a paced job of ``steps`` steps (one progress update per step, a preview
every ``preview_every`` steps) and watch it to the end, all at once.  Safelight: one job
per user (``--concurrency K``, builtin provider, 64x64) watched over WebSocket, as the
browser does.  Gradio: ``benchmarks/gradio_app.py`` (a generator yielding a progress text
per step and an image every 5 steps) driven through its documented HTTP API (``POST
/gradio_api/call/generate``, then its SSE stream), from its own venv (``--gradio-python``).

Measured per server: server CPU over the run per delivered update and per user job,
RSS growth per viewer at the peak of the run, and latency from the moment the server
produced an update (Safelight: the event's commit ``ts``; Gradio: the wall time the
generator put in the text) to the client receiving it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

from benchmarks.clients import TsParser
from benchmarks.config import ROOT, console
from benchmarks.context import Bench
from benchmarks.procs import Server, Window, proc_rss_kb, start_safelight
from benchmarks.stats import _round, percentile


class PeakRss:
    """Samples a process's VmRSS every 50 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = proc_rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, proc_rss_kb(self.pid))
            except (OSError, RuntimeError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(2)
        return self.peak


async def _safelight_user(url: str, steps: int, size: int) -> list[float]:
    """Create one job and follow it over WebSocket; latencies (ms) of live events."""
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
        r = await http.post(
            "/api/jobs",
            json={"prompt": "peer: a lighthouse", "steps": steps, "width": size, "height": size},
        )
        r.raise_for_status()
        job = r.json()
    parse = TsParser()
    latencies: list[float] = []
    ws_url = url.replace("http", "ws") + f"/api/jobs/{job['id']}/ws?after=0"
    async with ws_connect(ws_url, compression=None, proxy=None, max_size=1 << 22) as ws:
        welcome_t = time.time()
        async for message in ws:
            body = json.loads(message)
            if body.get("type") in ("welcome", "ping"):
                continue
            ts = parse(body["ts"])
            if ts >= welcome_t - 0.002:  # ts has 1 ms resolution
                latencies.append((time.time() - ts) * 1000)
    return latencies


async def _gradio_user(url: str) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
        r = await http.post("/gradio_api/call/generate", json={"data": ["peer: a lighthouse"]})
        r.raise_for_status()
        event_id = r.json()["event_id"]
        async with http.stream("GET", f"/gradio_api/call/generate/{event_id}") as stream:
            kind = ""
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "generating":
                    now = time.time()
                    text = json.loads(line[6:])[0]
                    latencies.append((now - float(text.split()[1])) * 1000)
                elif kind in ("complete", "error"):
                    break
    return latencies


async def _users(coros: list[Any]) -> tuple[list[float], int]:
    results = await asyncio.gather(*coros, return_exceptions=True)
    errors = sum(1 for r in results if isinstance(r, BaseException))
    return [x for r in results if not isinstance(r, BaseException) for x in r], errors


def _measure(
    server: Server, name: str, users: int, make_coros: Any, idle_s: float = 1.0
) -> dict[str, Any]:
    time.sleep(idle_s)
    before = proc_rss_kb(server.pid)
    window = Window(server.pid)
    rss = PeakRss(server.pid)
    window.start()
    t0 = time.time()
    latencies, errors = asyncio.run(_users(make_coros()))
    wall = time.time() - t0
    window.stop()
    peak = rss.stop()
    latencies.sort()
    updates = len(latencies)
    cpu = window.result["server_cpu_s"]
    return {
        "server": name,
        "users": users,
        "errors": errors,
        "updates": updates,
        "wall_s": round(wall, 2),
        "server_cpu_s": cpu,
        "cpu_us_per_update": _round(1e6 * cpu / updates if updates else None, 1),
        "cpu_ms_per_user_job": _round(1e3 * cpu / users, 1),
        "rss_before_kb": before,
        "rss_peak_kb": peak,
        "kb_per_viewer": _round((peak - before) / users, 1),
        "p50_ms": _round(percentile(latencies, 50)),
        "p99_ms": _round(percentile(latencies, 99)),
        "max_ms": _round(latencies[-1] if latencies else None),
        "machine_busy_pct": window.result["machine_busy_pct"],
    }


def peer(bench: Bench) -> list[dict[str, Any]]:
    c = bench.cfg
    users, steps, pace, every = c.peer_users, 30, c.peer_pace_s, 5
    console.print(
        f"[bold]side by side[/] {users} users x {steps} steps every {pace * 1000:.0f} ms, "
        f"a preview every {every} steps: Safelight, then Gradio ..."
    )
    rows: list[dict[str, Any]] = []
    app = start_safelight(
        "peer-safelight",
        bench.root / "peer",
        bench.logs / "peer-safelight.log",
        users,
        {
            **bench.app_settings(),
            "step_delay_s": pace,
            "progress_interval_s": pace / 2,  # one progress per step
            "preview_interval_s": every * pace * 0.95,  # one preview per `every` steps
        },
        c.server_src,
    )
    try:
        rows.append(
            _measure(
                app,
                "safelight (ws)",
                users,
                lambda: [_safelight_user(app.url, steps, 64) for _ in range(users)],
            )
        )
    finally:
        app.stop()
    python = c.gradio_python
    if python is None or not Path(python).exists():
        bench.note("side by side: no Gradio python (--gradio-python); Gradio not measured")
        return rows
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(bench.root / "gradio-tmp"),
        "PYTHONPATH": "",
    }
    cmd = [str(python), str(ROOT / "benchmarks" / "gradio_app.py"), "--steps", str(steps)]
    cmd += ["--pace", str(pace), "--preview-every", str(every)]
    gradio = Server("peer-gradio", cmd, env, bench.logs / "peer-gradio.log").wait_ready("/")
    try:
        rows.append(
            _measure(
                gradio, "gradio", users, lambda: [_gradio_user(gradio.url) for _ in range(users)]
            )
        )
        rows[-1]["gradio_version"] = _version(python, "gradio")
    finally:
        gradio.stop()
    return rows


def _version(python: Path, package: str) -> str | None:
    import subprocess

    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or None
