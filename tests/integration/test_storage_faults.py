"""A full disk: the data directory on a small private tmpfs, filled with a ballast file.

Needs root for ``mount -t tmpfs`` (CI runs as root on the project's machine).  Nothing is
skipped: if the mount is refused the test fails and says why.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAST, LiveServer
from tests.integration.helpers import create, wait_status

Factory = Callable[..., LiveServer]


@contextmanager
def private_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's -o size=) at ``mount``, unmounted afterwards."""
    mount.mkdir(exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"cannot mount a tmpfs (needs root): {result.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with private_tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


def fill(path: Path, leave: int) -> Path:
    ballast = path / "ballast"
    free = int(
        subprocess.run(
            ["df", "--output=avail", "-B1", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    )
    with ballast.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return ballast


def test_disk_full_fails_the_job_with_a_storage_error_then_recovers(small_disk: Path) -> None:
    server = LiveServer(small_disk / "data", {**FAST, "min_free_bytes": 256 * 1024})
    server.start()
    try:
        ballast = fill(small_disk, leave=300 * 1024)
        # Enough room to accept the job (above min_free_bytes), not enough for its PNG.
        job = create(server.url, width=1024, height=1024, steps=2, prompt="noise texture")
        failed = wait_status(server.url, job["id"], {"failed"})
        assert failed["error"]["type"] == "storage"
        assert failed["error"]["retryable"] is True
        assert "retry_later" in failed["error"]["next_steps"]
        assert httpx.get(f"{server.url}/api/jobs/{job['id']}/images/0").status_code == 404
        # Below the free-space floor: refuse new work, create nothing.
        ballast.unlink()
        fill(small_disk, leave=64 * 1024)
        r = httpx.post(f"{server.url}/api/jobs", json={"prompt": "x"})
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        assert r.json()["code"] == "storage_unavailable"
        assert "Traceback" not in r.text
        # Space freed: the next job succeeds without a restart.
        (small_disk / "ballast").unlink()
        retried = httpx.post(
            f"{server.url}/api/jobs/{job['id']}/retry",
            headers={"Authorization": f"Bearer {job['manage_token']}"},
        )
        assert retried.status_code == 202
        done = wait_status(server.url, job["id"], {"completed"})
        png = httpx.get(f"{server.url}{done['images'][0]['url']}").content
        assert png.startswith(b"\x89PNG") and len(png) == done["images"][0]["bytes"]
    finally:
        server.stop()
    with sqlite3.connect(small_disk / "data" / "safelight.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    leftovers = list((small_disk / "data" / "blobs").rglob(".*.tmp"))
    assert leftovers == []
