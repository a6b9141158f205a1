"""A real PostgreSQL restart mid-job (issue 13): 1 API node + 2 workers, lease 6 s.

    python -m benchmarks.pg_restart [--trials 3]

Restarts THE MACHINE'S PostgreSQL cluster with ``pg_ctlcluster`` (every session on it is
cut), so it is a manual check, not part of the test suite; the chaos suite's P6 cuts only
its own connections through a TCP proxy instead.  Each trial: an 80-step job at 0.1 s per
step, the cluster restarted 3 s after it starts running; reports whether the job completed
as attempt 1 with no ``retry`` event and a gapless log, how long PostgreSQL took to come
back, and when the API node's ``/readyz`` answered 200 again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.scale_out import Procs, database, events_of, queue_jobs, wait_done


def trial(url: str, db: str, version: str) -> dict[str, Any]:
    job = queue_jobs(url, 1, steps=80)[0]
    while httpx.get(f"{url}/api/jobs/{job}", timeout=10).json()["status"] != "running":
        time.sleep(0.05)
    time.sleep(3)
    cut = time.time()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True
    )
    back_s = time.time() - cut
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    ready_s = time.time() - cut
    wait_done(url, [job], timeout=120)
    final = httpx.get(f"{url}/api/jobs/{job}", timeout=10).json()
    mine = [e for e in events_of(db) if e["job_id"] == job]
    seqs = sorted(e["seq"] for e in mine)
    return {
        "status": final["status"],
        "attempt": final["attempt"],
        "retry_events": sum(e["type"] == "retry" for e in mine),
        "gapless": seqs == list(range(1, len(seqs) + 1)),
        "pg_back_s": round(back_s, 2),
        "readyz_200_after_s": round(ready_s, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    results = []
    with tempfile.TemporaryDirectory(prefix="safelight-pg-restart-") as tmp:
        root = Path(tmp)
        procs = Procs(root)
        try:
            with database() as db:
                env = {"SAFELIGHT_LEASE_S": "6", "SAFELIGHT_STEP_DELAY_S": "0.1"}
                api = {"SAFELIGHT_DATABASE_URL": db, "SAFELIGHT_CONCURRENCY": "0", **env}
                url = procs.serve(root / "data", **api)
                for n in range(2):
                    procs.worker(root / "data", db, f"w{n}", **env)
                for _ in range(args.trials):
                    results.append(trial(url, db, version))
                    print(json.dumps(results[-1]), flush=True)
        finally:
            procs.close()
    print(json.dumps({"trials": results, "load_avg_1m": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
