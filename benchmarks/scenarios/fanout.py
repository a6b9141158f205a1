"""Fan-out: one job, N subscribers, through the full app and through the bare server."""

from __future__ import annotations

import time
from typing import Any

import httpx

from benchmarks.clients import WorkerSpec
from benchmarks.config import GATE_STEPS, Phase, console
from benchmarks.context import Bench
from benchmarks.procs import (
    Profiler,
    Window,
    clients,
    proc_cpu_s,
    proc_rss_kb,
    start_bare,
    start_safelight,
)
from benchmarks.stats import summarise


def stream_url(port: int, job_id: str, transport: str, after: int) -> str:
    if transport == "poll":  # the client adds after= and wait= per request
        return f"http://127.0.0.1:{port}/api/jobs/{job_id}/events"
    scheme, path = ("ws", "ws") if transport == "ws" else ("http", "stream")
    return f"{scheme}://127.0.0.1:{port}/api/jobs/{job_id}/{path}?after={after}"


def fanout_app(bench: Bench, transport: str, phase: Phase) -> dict[str, Any]:
    c = bench.cfg
    label = f"{phase.name} app/{transport}"
    console.print(
        f"[bold]fan-out[/] {label}: {c.subscribers} subscribers, {phase.steps} steps "
        f"every {phase.step_delay_s * 1000:.0f} ms ..."
    )
    name = f"{phase.name}-app-{transport}"
    server = start_safelight(
        name,
        bench.root / name,
        bench.logs / f"{name}.log",
        1,
        bench.app_settings(phase),
        c.server_src,
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:

            def create(steps: int) -> dict[str, Any]:
                body = {
                    "prompt": "benchmark: a lighthouse at dusk",
                    "steps": steps or phase.steps,
                    "width": c.size,
                    "height": c.size,
                }
                r = http.post("/api/jobs", json=body)
                r.raise_for_status()
                job: dict[str, Any] = r.json()
                return job

            gates = [create(GATE_STEPS) for _ in range(bench.gates_needed(phase, transport))]
            time.sleep(0.01)  # the queue orders by enqueue time (ms), then id
            job = create(phase.steps)
            after = int(job["last_seq"])
            url = stream_url(server.port, job["id"], transport, after)
            spec = WorkerSpec(transport, url, after, c.subscribers, "stream", c.connect_concurrency)
            with clients(spec, c.client_procs) as group:
                connected = group.wait_for("connected", 300)
                status = http.get(f"/api/jobs/{job['id']}").json()["status"]
                if status != "queued":
                    bench.note(
                        f"{label}: the measured job was already {status} when all "
                        "subscribers were connected (raise --gate-s); early events are "
                        "excluded from latency as backlog"
                    )
                rss_connected = proc_rss_kb(server.pid)
                window = Window(server.pid)
                window.start()
                group.send("mark")
                nominal = phase.duration_s
                profiler = (
                    Profiler(server.pid, nominal + 1, bench.logs / f"py-spy-{name}.txt")
                    if c.profile
                    else None
                )
                for gate in reversed(gates):  # queued ones first, the running one last
                    r = http.post(
                        f"/api/jobs/{gate['id']}/cancel",
                        headers={"Authorization": f"Bearer {gate['manage_token']}"},
                    )
                    if r.status_code not in (200, 202, 409):
                        r.raise_for_status()
                finished = group.wait_for("finished", nominal * 4 + 120)
                window.stop()
                results = group.wait_for("result", 300)
            final = http.get(f"/api/jobs/{job['id']}").json()
            alone = job_alone(http, server.pid, create)
    finally:
        server.stop()
    summary = summarise(results, connected)
    check_final(bench, summary, label, int(final["last_seq"]), final["status"])
    if any(f.get("timed_out") for f in finished):
        bench.note(f"{label}: some streams had not ended when the run timed out")
    out = {
        "phase": phase.name,
        "server": "app",
        "transport": transport,
        **phase_info(bench, phase),
        **summary,
        "job": {
            "id": final["id"],
            "status": final["status"],
            "last_seq": final["last_seq"],
            "after": after,
            "steps": phase.steps,
        },
        **window.per_delivery(summary["live_deliveries"], alone["cpu_s"]),
        "job_alone": alone,
        "server_rss_kb_connected": rss_connected,
        "gates": len(gates),
        "client_procs": min(c.client_procs, c.subscribers),
    }
    if profiler is not None:
        out["profile"] = profiler.result()
    bench.app_shape[phase.name, transport] = summary["frame_bytes_mean"] or 200.0
    return out


def phase_info(bench: Bench, phase: Phase) -> dict[str, Any]:
    return {
        "steps": phase.steps,
        "step_delay_s": round(phase.step_delay_s, 4),
        "progress_interval_s": phase.progress_interval_s,
        "nominal_events": phase.nominal_events,
        "nominal_rate_per_s": round(phase.nominal_rate, 2),
        "nominal_deliveries_per_s": round(phase.nominal_rate * bench.cfg.subscribers, 1),
    }


def job_alone(http: httpx.Client, pid: int, create: Any) -> dict[str, Any]:
    """The server CPU of the same job with nobody watching (its own cost)."""
    cpu0, t0 = proc_cpu_s(pid), time.time()
    job = create(0)
    while job["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.1)
        job = http.get(f"/api/jobs/{job['id']}").json()
    cpu = proc_cpu_s(pid) - cpu0
    return {
        "cpu_s": round(cpu, 3),
        "wall_s": round(time.time() - t0, 2),
        "events": job["last_seq"],
        "status": job["status"],
    }


def check_final(
    bench: Bench, summary: dict[str, Any], label: str, last_seq: int, status: str
) -> None:
    wrong = {s: n for s, n in summary["final_seqs"].items() if int(s) != last_seq}
    if wrong:
        summary["violations"]["by_kind"]["final_seq_mismatch"] = sum(wrong.values())
        summary["violations"]["total"] += sum(wrong.values())
        summary["violations"]["examples"].append(
            f"{label}: final seqs {wrong} != job last_seq {last_seq}"
        )
    if summary["connected"] < summary["subscribers"]:
        bench.note(f"{label}: only {summary['connected']}/{summary['subscribers']} connected")
    if status != "completed":
        bench.note(f"{label}: the measured job ended {status}, not completed")


# 2. bare uvicorn fan-out
def fanout_bare(bench: Bench, transport: str, phase: Phase) -> dict[str, Any]:
    c = bench.cfg
    # The pace the measured job is configured for (not what the app managed under
    # load: it coalesces progress when its loop is late), in messages of the size the
    # app sent.
    count = phase.nominal_events
    size = bench.app_shape.get((phase.name, transport), 200.0)
    interval = phase.duration_s / count
    label = f"{phase.name} bare/{transport}"
    console.print(
        f"[bold]fan-out[/] {label}: {c.subscribers} subscribers, {count} messages "
        f"of ~{size:.0f} B every {interval * 1000:.0f} ms ..."
    )
    name = f"{phase.name}-bare-{transport}"
    server = start_bare(name, bench.logs / f"{name}.log")
    try:
        url = f"{'ws' if transport == 'ws' else 'http'}://127.0.0.1:{server.port}/{transport}"
        spec = WorkerSpec(transport, url, 0, c.subscribers, "stream", c.connect_concurrency)
        with clients(spec, c.client_procs) as group:
            connected = group.wait_for("connected", 300)
            rss_connected = proc_rss_kb(server.pid)
            window = Window(server.pid)
            window.start()
            group.send("mark")
            nominal = count * interval
            profiler = (
                Profiler(server.pid, nominal + 1, bench.logs / f"py-spy-{name}.txt")
                if c.profile
                else None
            )
            r = httpx.post(
                f"{server.url}/start",
                params={
                    "transport": transport,
                    "count": count,
                    "interval": interval,
                    "size": round(size),
                },
                trust_env=False,
            )
            r.raise_for_status()
            finished = group.wait_for("finished", nominal * 4 + 120)
            window.stop()
            results = group.wait_for("result", 300)
    finally:
        server.stop()
    summary = summarise(results, connected)
    check_final(bench, summary, label, count, "completed")
    if any(f.get("timed_out") for f in finished):
        bench.note(f"{label}: some streams had not ended when the run timed out")
    out = {
        "phase": phase.name,
        "server": "bare",
        "transport": transport,
        **phase_info(bench, phase),
        **summary,
        "messages": count,
        "interval_s": interval,
        **window.per_delivery(summary["live_deliveries"]),
        "client_procs": min(c.client_procs, c.subscribers),
        "server_rss_kb_connected": rss_connected,
    }
    if profiler is not None:
        out["profile"] = profiler.result()
    return out
