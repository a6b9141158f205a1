"""Scale-out mode on the local PostgreSQL: two API nodes and two worker processes, sharing
one database and one blob directory.  Events committed anywhere reach followers on every
node (LISTEN/NOTIFY); a killed worker's job is reclaimed by the other after its lease."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST, LiveServer, ManagedProcess
from tests.integration.helpers import (
    assert_exactly_once,
    create,
    get,
    poll,
    read_sse,
    read_ws,
    wait_status,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(pg_database: str) -> str:
    """A fresh database per test (tests/integration/conftest.py)."""
    return pg_database


class WorkerProcess(ManagedProcess):
    def __init__(self, data_dir: Path, database_url: str, name: str, **settings: Any) -> None:
        self.args = [
            sys.executable,
            "-m",
            "safelight",
            "worker",
            "--database-url",
            database_url,
            "--data-dir",
            str(data_dir),
            "--name",
            name,
        ]
        self.env = LiveServer(data_dir, {**FAST, **settings}).env()
        self.log_path = data_dir.parent / f"worker-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self


@pytest.fixture
def cluster(tmp_path: Path, database: str) -> Iterator[Callable[..., dict[str, Any]]]:
    started: list[Any] = []

    def build(**settings: Any) -> dict[str, Any]:
        data = tmp_path / "shared"
        common = {**FAST, "database_url": database, **settings}
        nodes = [LiveServer(data, {**common, "concurrency": 0}) for _ in range(2)]
        for node in nodes:
            node.start()
            started.append(node)
        workers = [WorkerProcess(data, database, f"w{n}", **settings).start() for n in (1, 2)]
        started.extend(workers)
        return {"a": nodes[0], "b": nodes[1], "workers": workers}

    yield build
    for part in started:
        part.stop()


def test_job_created_on_one_node_streams_live_on_the_other(
    cluster: Callable[..., dict[str, Any]],
) -> None:
    c = cluster(step_delay_s=0.02)
    a, b = c["a"], c["b"]
    job = create(a.url, steps=60, num_images=2)
    _, ws_events, closed = read_ws(b.url, job["id"], 0)
    assert closed
    assert_exactly_once(ws_events)
    assert ws_events[-1]["type"] == "completed"
    _, sse_events, _ = read_sse(a.url, job["id"], 0)
    assert sse_events == ws_events
    running = next(e for e in ws_events if e["type"] == "running")
    assert running["data"]["worker"] in {"w1-1", "w2-1"}
    final = get(b.url, job["id"])
    for image in final["images"]:
        png = httpx.get(f"{b.url}{image['url']}").content
        assert png.startswith(b"\x89PNG")


def test_both_workers_take_jobs(cluster: Callable[..., dict[str, Any]]) -> None:
    c = cluster(step_delay_s=0.02)
    jobs = [create(c["a"].url, steps=40) for _ in range(4)]
    owners = set()
    for job in jobs:
        wait_status(c["b"].url, job["id"], {"completed"})
        events = poll(c["b"].url, job["id"], 0)["events"]
        owners.add(next(e for e in events if e["type"] == "running")["data"]["worker"])
    assert owners == {"w1-1", "w2-1"}


def test_cancel_on_one_node_stops_the_worker_promptly(
    cluster: Callable[..., dict[str, Any]],
) -> None:
    # A long lease: the cancel must travel by NOTIFY, not wait for a heartbeat.
    c = cluster(step_delay_s=0.05, lease_s=30.0)
    job = create(c["a"].url, steps=150)
    wait_status(c["a"].url, job["id"], {"running"})
    r = httpx.post(
        f"{c['b'].url}/api/jobs/{job['id']}/cancel",
        headers={"Authorization": f"Bearer {job['manage_token']}"},
    )
    assert r.status_code == 202
    # The whole job takes ~7.5 s, less than the first heartbeat (lease/3 = 10 s): if the
    # cancel waited for a heartbeat the job would complete, so "cancelled" proves NOTIFY.
    final = wait_status(c["a"].url, job["id"], {"cancelled", "completed", "failed"}, timeout=30)
    assert final["status"] == "cancelled", final
    # Under load the cancel can land before the first progress event (progress is null).
    assert ((final["progress"] or {}).get("step") or 0) < 150


def test_a_killed_worker_is_replaced_by_the_other(
    cluster: Callable[..., dict[str, Any]],
) -> None:
    c = cluster(step_delay_s=0.03, lease_s=1.0)
    job = create(c["a"].url, steps=120)
    got = read_ws(c["b"].url, job["id"], 0, limit=8)[1]
    owner = next(e for e in got if e["type"] == "running")["data"]["worker"]
    victim = c["workers"][0] if owner == "w1-1" else c["workers"][1]
    victim.kill()
    got += read_ws(c["a"].url, job["id"], got[-1]["seq"])[1]
    assert_exactly_once(got)
    assert got[-1]["type"] == "completed" and got[-1]["attempt"] == 2
    retry = next(e for e in got if e["type"] == "retry")
    assert retry["data"]["reason"] == "worker_lost"
    runners = [e["data"]["worker"] for e in got if e["type"] == "running"]
    assert runners[0] == owner and runners[1] != owner


def test_an_api_node_dies_and_the_client_resumes_on_the_other(
    cluster: Callable[..., dict[str, Any]],
) -> None:
    c = cluster(step_delay_s=0.03)
    job = create(c["a"].url, steps=100)
    got = read_sse(c["a"].url, job["id"], 0, limit=6)[1]
    c["a"].kill()
    got += read_sse(c["b"].url, job["id"], got[-1]["seq"])[1]
    assert_exactly_once(got)
    assert got[-1]["type"] == "completed"


def test_the_worker_command_needs_postgres(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "safelight", "worker", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--database-url" in r.stderr
