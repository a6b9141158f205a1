"""scripts/cluster as an operator runs it: PostgreSQL, 2 API nodes behind nginx, 2 workers,
blobs in PostgreSQL; a job through the printed URL; Ctrl-C stops every process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import FAST, free_port
from tests.integration.helpers import create, read_sse, read_ws, wait_status
from tests.pgdb import PG

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[2]


def test_cluster_script_serves_a_job_through_nginx_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    database = f"safelight_cluster_{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFELIGHT_")}
    env.update({f"SAFELIGHT_{k.upper()}": str(v) for k, v in FAST.items() if k != "dev_faults"})
    cmd = [sys.executable, str(REPO / "scripts" / "cluster.py"), "--port", str(port)]
    cmd += ["--database", database, "--run-dir", str(tmp_path / "run")]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Safelight cluster: http://127.0.0.1:"), first + proc.stdout.read()
        url = first.split(": ", 1)[1].strip()
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"

        jobs = [create(url, steps=20, width=128, height=128) for _ in range(4)]
        _, events, closed = read_ws(url, jobs[0]["id"], 0)
        assert closed and events[-1]["type"] == "completed"
        sse_events = read_sse(url, jobs[0]["id"], 0)[1]
        assert sse_events == events
        workers = set()
        for job in jobs:
            done = wait_status(url, job["id"], {"completed"}, timeout=60)
            png = httpx.get(f"{url}{done['images'][0]['url']}").content
            assert png.startswith(b"\x89PNG") and len(png) == done["images"][0]["bytes"]
            running = read_sse(url, job["id"], 0)[1]
            workers.add(next(e for e in running if e["type"] == "running")["data"]["worker"])
        assert workers <= {"worker-1-1", "worker-2-1"} and workers

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "cluster: stopped" in proc.stdout.read()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/readyz", timeout=2)
        nginx_pid = tmp_path / "run" / "nginx" / "nginx.pid"
        deadline = time.monotonic() + 5
        while nginx_pid.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not nginx_pid.exists(), "nginx did not exit"
    finally:
        if proc.poll() is None:
            # SIGINT first: the script stops its children (SIGKILL would orphan them).
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
