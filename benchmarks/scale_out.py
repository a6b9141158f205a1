"""Scale-out numbers (issue 13): jobs claimed per second by 4 workers on PostgreSQL vs
SQLite, and reclaim time after a worker is SIGKILLed mid-job.

    python -m benchmarks.scale_out [--jobs 200] [--kills 3] [--lease 2]

Claims/s: N one-step jobs (64x64, no step delay) are queued first, with no worker running;
then 4 workers start (PostgreSQL: 4 ``safelight worker`` processes; SQLite: one embedded
server with 4 slots, the only way SQLite runs), and the rate is N / (last ``running``
event - first ``running`` event), from the events' database timestamps.  That is the whole
job loop per slot (claim, run, upload, complete), which is what bounds claims per slot.

Reclaim: a 2-worker PostgreSQL cluster; a job is SIGKILLed at step 3 on its worker; reclaim
time = the second attempt's ``running`` timestamp - the kill (wall clock; same machine).
It is bounded below by the lease (``--lease``) and the reaper interval (0.2 s here).
Cross-node delivery: 2 API nodes (no workers) and 1 worker on PostgreSQL; ``--subscribers``
WebSocket clients (half on each node) follow one paced job from before it starts; latency =
arrival - the event's ``ts`` (the database clock at commit; same machine), over every
progress/preview/terminal event, so it covers commit -> NOTIFY -> each node's listener ->
fan-out -> socket.
Needs the local PostgreSQL (127.0.0.1:5432, trust auth); makes and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
QUICK = {
    "SAFELIGHT_STEP_DELAY_S": "0",
    "SAFELIGHT_REAPER_INTERVAL_S": "0.2",
    "SAFELIGHT_WORKER_IDLE_POLL_S": "0.2",
    "SAFELIGHT_QUEUE_LIMIT": "100000",
    "SAFELIGHT_CREATE_RATE_PER_MIN": "1000000",
    "SAFELIGHT_MIN_FREE_BYTES": "0",
    "SAFELIGHT_LOG_LEVEL": "warning",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database() -> Iterator[str]:
    name = f"safelight_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


class Procs:
    """Processes this benchmark started; stopped (by pid) on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("SAFELIGHT_")}
        with (self.root / log).open("ab") as out:
            p = subprocess.Popen(
                [sys.executable, "-m", "safelight", *args],
                env={**full, **QUICK, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(p)
        return p

    def serve(self, data: Path, **env: str) -> str:
        port = free_port()
        self.spawn(
            ["serve", "--port", str(port), "--data-dir", str(data)], env, f"serve-{port}.log"
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"server did not start; see {self.root}")

    def worker(self, data: Path, db: str, name: str, **env: str) -> subprocess.Popen[bytes]:
        args = ["worker", "--database-url", db, "--data-dir", str(data), "--name", name]
        return self.spawn(args, env, f"worker-{name}.log")

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        for p in self.procs:
            self.stop(p)


def queue_jobs(url: str, n: int, **body: Any) -> list[str]:
    ids = []
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            r = client.post(
                f"{url}/api/jobs",
                json={"prompt": "bench", "steps": 1, "width": 64, "height": 64, **body},
            )
            r.raise_for_status()
            ids.append(r.json()["id"])
    return ids


def wait_done(url: str, ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    for job_id in ids:
        while httpx.get(f"{url}/api/jobs/{job_id}", timeout=30).json()["status"] not in (
            "completed",
            "failed",
            "cancelled",
        ):
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not finish")
            time.sleep(0.05)


def running_span_s(events: list[dict[str, Any]]) -> float:
    ts = [e["ts_ms"] for e in events if e["type"] == "running"]
    return (max(ts) - min(ts)) / 1000


def events_of(db: str) -> list[dict[str, Any]]:
    engine = create_engine(db)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(text("SELECT * FROM job_events")).mappings()]
    engine.dispose()
    return rows


def claims_postgres(root: Path, jobs: int) -> float:
    procs = Procs(root)
    try:
        with database() as db:
            data = root / "pg"
            url = procs.serve(data, SAFELIGHT_DATABASE_URL=db, SAFELIGHT_CONCURRENCY="0")
            ids = queue_jobs(url, jobs)
            for n in range(4):
                procs.worker(data, db, f"w{n}", SAFELIGHT_LEASE_S="30")
            wait_done(url, ids)
            return jobs / running_span_s(events_of(db))
    finally:
        procs.close()


def claims_sqlite(root: Path, jobs: int) -> float:
    procs = Procs(root)
    data = root / "sqlite"
    try:
        url = procs.serve(data, SAFELIGHT_CONCURRENCY="0")
        ids = queue_jobs(url, jobs)
        procs.close()
        procs.procs.clear()
        url = procs.serve(data, SAFELIGHT_CONCURRENCY="4")
        wait_done(url, ids)
    finally:
        procs.close()
    return jobs / running_span_s(events_of(f"sqlite:///{data / 'safelight.db'}"))


def reclaims(root: Path, kills: int, lease: float) -> list[float]:
    procs = Procs(root)
    out = []
    try:
        with database() as db:
            data = root / "reclaim"
            env = {"SAFELIGHT_LEASE_S": str(lease), "SAFELIGHT_STEP_DELAY_S": "0.03"}
            url = procs.serve(data, SAFELIGHT_DATABASE_URL=db, SAFELIGHT_CONCURRENCY="0", **env)
            workers = {f"w{n}": procs.worker(data, db, f"w{n}", **env) for n in range(2)}
            for _ in range(kills):
                job_id = queue_jobs(url, 1, steps=100)[0]
                while (httpx.get(f"{url}/api/jobs/{job_id}").json()["progress"] or {}).get(
                    "step", 0
                ) < 3:
                    time.sleep(0.02)
                mine = [e for e in events_of(db) if e["job_id"] == job_id]
                owner = json.loads(next(e for e in mine if e["type"] == "running")["data"])
                name = owner["worker"].rsplit("-", 1)[0]
                workers[name].kill()
                workers[name].wait()
                killed_ms = time.time() * 1000
                workers[name] = procs.worker(data, db, name, **env)  # for the next round
                wait_done(url, [job_id])
                mine = [e for e in events_of(db) if e["job_id"] == job_id]
                second = sorted(
                    (e for e in mine if e["type"] == "running"), key=lambda e: e["seq"]
                )[1]
                out.append(round((second["ts_ms"] - killed_ms) / 1000, 2))
    finally:
        procs.close()
    return out


async def _follow(url: str, lat: list[float]) -> bool:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, ping_interval=None, open_timeout=60) as ws:
        json.loads(await ws.recv())  # welcome
        async for raw in ws:
            now = time.time()
            frame = json.loads(raw)
            if frame.get("type") == "ping":
                continue
            ts = datetime.fromisoformat(frame["ts"].replace("Z", "+00:00")).timestamp()
            if frame["type"] in ("progress", "preview", "completed"):
                lat.append(now - ts)
            if frame["type"] in ("completed", "failed", "cancelled"):
                return frame["type"] == "completed"
    return False


def fanout_two_nodes(root: Path, subscribers: int, steps: int) -> dict[str, Any]:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    procs = Procs(root)
    try:
        with database() as db:
            data = root / "fanout"
            api = {
                "SAFELIGHT_DATABASE_URL": db,
                "SAFELIGHT_CONCURRENCY": "0",
                "SAFELIGHT_MAX_STREAMS_PER_CLIENT": str(subscribers),  # one client host
            }
            urls = [procs.serve(data, **api), procs.serve(data, **api)]
            job_id = queue_jobs(urls[0], 1, steps=steps)[0]
            lat: list[float] = []

            async def run() -> list[bool]:
                ws = [
                    u.replace("http://", "ws://") + f"/api/jobs/{job_id}/ws?after=0" for u in urls
                ]
                tasks = [asyncio.create_task(_follow(ws[n % 2], lat)) for n in range(subscribers)]
                await asyncio.sleep(2.0)  # let every client connect before the job starts
                procs.worker(data, db, "w0", SAFELIGHT_STEP_DELAY_S="0.1")
                return list(await asyncio.gather(*tasks))

            done = asyncio.run(run())
            lat.sort()

            def pct(q: float) -> float:
                return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1)

            return {
                "subscribers": subscribers,
                "api_nodes": 2,
                "completed_clients": sum(done),
                "deliveries": len(lat),
                "p50_ms": pct(0.50),
                "p99_ms": pct(0.99),
                "max_ms": round(lat[-1] * 1000, 1),
            }
    finally:
        procs.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--only-fanout", action="store_true", help="skip claims and reclaims")
    args = parser.parse_args(argv)
    if args.only_fanout:
        with tempfile.TemporaryDirectory(prefix="safelight-scale-bench-") as tmp:
            result = fanout_two_nodes(Path(tmp), args.subscribers, args.steps)
        result.update(cpus=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 1))
        print(json.dumps(result, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="safelight-scale-bench-") as tmp:
        root = Path(tmp)
        result = {
            "jobs": args.jobs,
            "claims_per_s_postgres_4_workers": round(claims_postgres(root, args.jobs), 1),
            "claims_per_s_sqlite_4_slots": round(claims_sqlite(root, args.jobs), 1),
            "lease_s": args.lease,
            "reclaim_s_after_sigkill": reclaims(root, args.kills, args.lease),
            "fanout_2_api_nodes": fanout_two_nodes(root, args.subscribers, args.steps),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 1),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
