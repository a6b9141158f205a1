"""R12: clock skew with libfaketime (Debian's ``faketime``; scripts/install --all installs
it).  Only the wall clock is faked (``FAKETIME_DONT_FAKE_MONOTONIC=1``): timers, backoff
and deadlines run on the monotonic clock; what a skew can break is anything that compares
wall-clock instants taken on different machines - leases above all.

* Embedded (one process, SQLite): the store's clock *is* the process clock, so a constant
  skew is harmless; a *step* of the clock while jobs run (NTP correcting a wrong clock) is
  the interesting case and is applied mid-run through a faketime timestamp file.
* Scale-out (PostgreSQL): an API node with the true time and two ``safelight worker``
  processes at +3 h and -3 h, then the API node skewed instead.  Leases and idempotency
  keys are judged by the database clock, so nothing may be reclaimed or retried.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.chaos.conftest import Scenario
from tests.conftest import FAST, LiveServer
from tests.integration.helpers import TERMINAL, create, get, poll, wait_status
from tests.integration.test_scale_out import WorkerProcess, database

__all__ = ["database"]  # the PostgreSQL fixture, reused

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


# libfaketime 0.9.10 (Debian bookworm) with the monotonic clock excluded turns Python
# 3.11's time.sleep (clock_nanosleep on CLOCK_MONOTONIC, TIMER_ABSTIME) into EINVAL
# (wolfcw/libfaketime#426), while Event.wait and asyncio are fine.  The faked processes get
# this shim ahead of everything on PYTHONPATH; it changes how the harness sleeps, nothing
# in Safelight.
SLEEP_SHIM = """\
import threading
import time


def _sleep(seconds):
    if seconds > 0:
        threading.Event().wait(seconds)


time.sleep = _sleep
"""


def faketime_env(offset_or_file: str | Path, shim_dir: Path) -> dict[str, str]:
    """LD_PRELOAD settings for a constant offset ("+3h") or a timestamp file whose
    content (an offset) is re-read on every call, so a test can step the clock."""
    # Never a skip: a missing library would make the scenario prove nothing (CI fails).
    assert LIBFAKETIME.exists(), (
        f"{LIBFAKETIME} is missing: install Debian's faketime (scripts/install --all does)"
    )
    shim_dir.mkdir(exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(SLEEP_SHIM)
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(shim_dir), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    if isinstance(offset_or_file, Path):
        # Re-read every second: FAKETIME_NO_CACHE (a file read per clock call) slows the
        # server so much that heartbeats come late and leases lapse for real.
        env |= {"FAKETIME_TIMESTAMP_FILE": str(offset_or_file), "FAKETIME_CACHE_DURATION": "1"}
    else:
        env["FAKETIME"] = offset_or_file
    return env


class SkewedServer(LiveServer):
    def __init__(self, data_dir: Path, settings: dict[str, Any], skew: dict[str, str]) -> None:
        super().__init__(data_dir, settings)
        self.skew = skew

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.skew}


def events_of(url: str, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = poll(url, job_id, 0)["events"]
    return events


def judge_jobs(run: Scenario, url: str, job_ids: list[str]) -> dict[str, int]:
    """Every job completed on its first attempt with a gapless log and no retry."""
    retries = lost = stuck = went_back = 0
    for job_id in job_ids:
        try:
            job = wait_status(url, job_id, TERMINAL, timeout=60)
        except AssertionError:
            stuck += 1
            continue
        events = events_of(url, job_id)
        seqs = [e["seq"] for e in events]
        lost += len(set(range(1, job["last_seq"] + 1)) - set(seqs))
        retries += sum(1 for e in events if e["type"] == "retry")
        if job["status"] != "completed":
            run.fail(f"job {job_id} ended {job['status']}: {job.get('error')}")
        stamps = [datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) for e in events]
        if stamps != sorted(stamps):
            went_back += 1  # reported, not a failure: ``ts`` is wall-clock time
    if retries:
        run.fail(f"{retries} spurious retries (leases reclaimed while heartbeats were on time)")
    run.count(lost=lost, stuck=stuck)
    run.figure("jobs_whose_event_ts_went_back", went_back)
    return {"retries": retries, "lost": lost, "stuck": stuck}


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r12_embedded_wall_clock_step_reclaims_no_lease(tmp_path: Path, scenario: Any) -> None:
    run = scenario("R12e", "embedded server, wall clock stepped +1 h then -2 h mid-run")
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    server = SkewedServer(
        tmp_path / "data",
        {**FAST, "step_delay_s": 0.04, "lease_s": 5.0, "stall_deadline_s": 10.0, "concurrency": 2},
        faketime_env(offset, tmp_path / "shim"),
    )
    server.start()
    try:
        for _ in run.trials():
            offset.write_text("+0\n")
            jobs = [create(server.url, steps=100)["id"] for _ in range(4)]
            wait_status(server.url, jobs[0], {"running"})
            time.sleep(0.3)
            offset.write_text("+1h\n")  # NTP steps the clock forward ...
            time.sleep(1.5)
            offset.write_text("-1h\n")  # ... and back past where it was
            result = judge_jobs(run, server.url, jobs)
            run.figure("spurious_retries", result["retries"])
    finally:
        server.stop()
    assert (run.lost, run.stuck) == (0, 0) and run.passed == run.trials_run, run.row()


@pytest.mark.timeout(1800)  # the long tier runs many trials
@pytest.mark.postgres
def test_r12_skewed_workers_and_api_node(tmp_path: Path, database: str, scenario: Any) -> None:
    run = scenario("R12", "PostgreSQL: workers at +3 h / -3 h, then the API node at +3 h")
    data = tmp_path / "shared"
    settings = {"step_delay_s": 0.02, "lease_s": 4.0}
    common = {**FAST, "database_url": database, **settings}
    parts: list[Any] = []
    try:
        api = LiveServer(data, {**common, "concurrency": 0}).start()
        parts.append(api)
        for name, skew in (("ahead", "+3h"), ("behind", "-3h")):
            worker = WorkerProcess(data, database, name, **{**settings, "concurrency": 2})
            worker.env = {**worker.env, **faketime_env(skew, tmp_path / "shim")}
            parts.append(worker.start())
        skewed_api = SkewedServer(
            data, {**common, "concurrency": 0}, faketime_env("+3h", tmp_path / "shim")
        )
        parts.append(skewed_api.start())
        engine = create_engine(database)
        lease_margins: list[int] = []
        for _ in run.trials():
            jobs = [create(api.url, steps=60)["id"] for _ in range(10)]
            jobs += [create(skewed_api.url, steps=60)["id"] for _ in range(10)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    rows = conn.execute(
                        text(
                            "SELECT lease_expires_ms - CAST(EXTRACT(EPOCH FROM "
                            "clock_timestamp()) * 1000 AS BIGINT) FROM jobs "
                            "WHERE status = 'running' AND lease_expires_ms IS NOT NULL"
                        )
                    ).all()
                lease_margins += [int(r[0]) for r in rows]
                if all(get(api.url, j)["status"] in TERMINAL for j in jobs):
                    break
                time.sleep(0.1)
            judge_jobs(run, api.url, jobs)
            workers = {
                e["data"].get("worker")
                for j in jobs
                for e in events_of(api.url, j)
                if e["type"] == "running"
            }
            if not any("ahead" in str(w) for w in workers) or not any(
                "behind" in str(w) for w in workers
            ):
                run.note(f"not both skewed workers ran jobs: {sorted(map(str, workers))}")
            # Idempotency through the skewed node: the key is remembered by DB time.
            key = f"skew-{uuid.uuid4().hex}"
            first = create(skewed_api.url, key=key, steps=2)
            again = httpx.post(
                f"{api.url}/api/jobs",
                json={"prompt": "a lighthouse at dusk", "steps": 2, "width": 64, "height": 64},
                headers={"Idempotency-Key": key},
            )
            if again.json().get("id") != first["id"]:
                run.fail("an idempotency key written by the skewed node was not honoured")
        engine.dispose()
        # A lease is set from the DB clock: never more than lease_s ahead of DB now,
        # even when the worker's own clock is 3 h ahead.
        worst = max(lease_margins) if lease_margins else None
        run.figure("lease_ahead_of_db_now_max_ms", worst)
        run.figure("lease_samples", len(lease_margins))
        if worst is None or worst > common["lease_s"] * 1000 + 50:
            run.fail(f"a lease was set from a skewed clock: {worst} ms ahead of DB now")
    finally:
        for part in reversed(parts):
            part.stop()
    assert (run.lost, run.stuck) == (0, 0) and run.passed == run.trials_run, run.row()
