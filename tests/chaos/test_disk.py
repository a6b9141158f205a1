"""R13: the disk fills up during a preview write, a final write and a create.

The data directory (SQLite and blobs) lives on a small private tmpfs filled with a ballast
file (the approach and helpers of tests/integration/test_storage_faults.py).  After each
fault: no 500, no job left ``running``, no partial image served; after the ballast goes,
work succeeds again with no restart.  At the end: ``PRAGMA integrity_check`` and every
job's log gapless (seq 1..last_seq, matching the job row).
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import Scenario
from tests.conftest import FAST, LiveServer
from tests.integration.helpers import TERMINAL, create, get, wait_status
from tests.integration.test_storage_faults import fill, private_tmpfs

LEASE_S = 2.0


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    # Room for a few trials' previews and 1024x1024 PNGs; filled to the brim by ballast.
    with private_tmpfs(tmp_path / "disk", "24m") as mount:
        yield mount


def fill_up(path: Path) -> Path:
    """Fill the disk completely, whatever the running job writes meanwhile."""
    ballast = path / "ballast"
    with ballast.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    with ballast.open("ab", buffering=0) as f:  # then the last partial block
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return ballast


def check_store(db_path: Path) -> list[str]:
    """Integrity problems of an embedded store: SQLite's own check, then every job's log
    must be exactly 1..last_seq."""
    problems: list[str] = []
    with sqlite3.connect(db_path) as db:
        result = db.execute("PRAGMA integrity_check").fetchone()
        if result != ("ok",):
            problems.append(f"integrity_check: {result}")
        for job_id, last_seq in db.execute("SELECT id, last_seq FROM jobs"):
            seqs = [
                s
                for (s,) in db.execute(
                    "SELECT seq FROM job_events WHERE job_id = ? ORDER BY seq", (job_id,)
                )
            ]
            if seqs != list(range(1, last_seq + 1)):
                problems.append(f"job {job_id}: log {seqs[:5]}... vs last_seq {last_seq}")
    return problems


def served_images_whole(url: str, job: dict[str, Any]) -> bool:
    """A completed job's PNGs are whole; any other job serves none."""
    if job["status"] != "completed":
        return httpx.get(f"{url}/api/jobs/{job['id']}/images/0").status_code in (404, 409)
    for image in job["images"]:
        body = httpx.get(f"{url}{image['url']}").content
        if not (body.startswith(b"\x89PNG") and len(body) == image["bytes"]):
            return False
    return True


def settle(url: str, job_id: str, lease_s: float) -> dict[str, Any] | None:
    """The job once it is terminal, or None if it is still running/uploading after
    lease + 5 s (stuck); a job re-queued by the store is given its next attempt."""
    try:
        return wait_status(url, job_id, TERMINAL, timeout=lease_s + 5)
    except AssertionError:
        return None


def retry_to_completion(url: str, job: dict[str, Any], token: str) -> dict[str, Any]:
    if job["status"] == "failed":
        r = httpx.post(
            f"{url}/api/jobs/{job['id']}/retry", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 202, r.text
    return wait_status(url, job["id"], {"completed"}, timeout=30)


def _preview_and_final(run: Scenario, server: LiveServer, disk: Path) -> dict[str, str]:
    seen: dict[str, str] = {}
    url = server.url
    # (a) the disk fills while a job is writing previews (and events, since SQLite is
    # on the same disk).
    job = create(url, steps=150, width=256, height=256, prompt="noise texture")
    wait_status(url, job["id"], {"running"})
    time.sleep(0.2)
    ballast = fill_up(disk)
    time.sleep(LEASE_S + 1)
    while_full = get(url, job["id"])
    ballast.unlink()
    # Once space is back the attempt must not stay running past lease + 5 s: it failed
    # (storage_full), or its lease lapsed and the reaper requeued it.
    moved = False
    deadline = time.monotonic() + LEASE_S + 5
    while time.monotonic() < deadline and not moved:
        now = get(url, job["id"])
        moved = now["status"] != "running" or now["attempt"] != while_full["attempt"]
        time.sleep(0.05)
    if while_full["status"] == "running" and not moved:
        run.count(stuck=1)
        run.fail("(a) the attempt stayed running after space returned")
    a = wait_status(url, job["id"], TERMINAL, timeout=60)
    seen["preview"] = (
        f"while full {while_full['status']}, then {a['status']} after "
        f"{a['attempt'] - job['attempt'] + 1} attempt(s)"
        + (f" ({a['error']['code']})" if a.get("error") else "")
    )
    if not served_images_whole(url, a):
        run.fail("(a) a partial image was served")
    retry_to_completion(url, a, job["manage_token"])
    # (b) room to accept the job, not for its final PNG.
    ballast = fill(disk, leave=300 * 1024)
    job = create(url, steps=2, width=1024, height=1024, prompt="noise texture")
    b = settle(url, job["id"], LEASE_S)
    ballast.unlink()
    if b is None:
        run.count(stuck=1)
        b = wait_status(url, job["id"], TERMINAL, timeout=30)
    seen["final"] = f"{b['status']}:{(b.get('error') or {}).get('code', '-')}"
    if not served_images_whole(url, b):
        run.fail("(b) a partial image was served")
    retry_to_completion(url, b, job["manage_token"])
    # (c) the disk is full when the job is created: SQLite itself cannot write.
    ballast = fill_up(disk)
    r = httpx.post(f"{url}/api/jobs", json={"prompt": "x", "width": 64, "height": 64})
    seen["create"] = f"{r.status_code}:{r.json().get('code', '-') if r.content else '-'}"
    if r.status_code not in (503, 507) or "retry-after" not in r.headers:
        run.fail(f"(c) create on a full disk answered {r.status_code}: {r.text[:200]}")
    if "Traceback" in r.text or r.headers.get("content-type") != "application/problem+json":
        run.fail("(c) the refusal is not a problem+json body")
    ballast.unlink()
    # Space is back: new work succeeds with no restart.
    fresh = create(url, steps=3)
    if wait_status(url, fresh["id"], TERMINAL, timeout=30)["status"] != "completed":
        run.fail("a new job did not complete after space returned")
    return seen


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r13_disk_full_during_preview_final_and_create(
    disk: Path, tmp_path: Path, scenario: Any
) -> None:
    run = scenario("R13", "disk full: preview write, final write, create (SQLite + blobs)")
    outcomes: list[dict[str, str]] = []
    for trial in run.trials():
        data = disk / f"data{trial}"
        server = LiveServer(data, {**FAST, "min_free_bytes": 0, "lease_s": LEASE_S})
        server.log_path = tmp_path / f"server-{trial}.log"  # off the full disk
        server.start()
        try:
            outcomes.append(_preview_and_final(run, server, disk))
            # A floor on free space refuses new work before the disk is actually full.
            server.stop()
            server.settings = {**server.settings, "min_free_bytes": 256 * 1024}
            server.start()
            ballast = fill(disk, leave=64 * 1024)
            r = httpx.post(f"{server.url}/api/jobs", json={"prompt": "x"})
            ballast.unlink()
            if not (r.status_code == 503 and int(r.headers.get("retry-after", 0)) > 0):
                run.fail(f"create below the floor answered {r.status_code}")
            for job_id in _job_ids(data / "safelight.db"):
                job = get(server.url, job_id)
                if job["status"] not in TERMINAL:
                    run.count(stuck=1)
                if not served_images_whole(server.url, job):
                    run.fail(f"job {job_id} serves a partial image")
        finally:
            server.stop()
        # Regression (store_full_mid_attempt_logged_as_unexpected_error): a store that
        # cannot write mid-attempt is an expected condition, logged as a warning.
        if "unexpected error" in server.log():
            run.fail("the worker logged a full store as an unexpected error")
        for problem in check_store(data / "safelight.db"):
            run.fail(problem)
        if list((data / "blobs").rglob(".*.tmp")):
            run.fail("temporary blob files were left behind")
        run.count()
        shutil.rmtree(data)  # make room for the next trial
    run.figure("outcomes", "; ".join(f"{k}={v}" for o in outcomes[:1] for k, v in o.items()))
    assert run.passed == run.trials_run and run.stuck == 0, run.row()


def _job_ids(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as db:
        return [row[0] for row in db.execute("SELECT id FROM jobs")]
