"""Operating scale-out on the local PostgreSQL: database blips and outages (through a TCP
proxy that cuts only this test's connections), a LISTEN connection killed, graceful
hand-over on SIGTERM, and ``SAFELIGHT_NODE_NAME`` for ``safelight worker``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from safelight.store.schema import HEAD
from tests.conftest import FAST, LiveServer
from tests.integration.helpers import (
    all_events,
    assert_exactly_once,
    create,
    read_sse,
    wait_status,
    wait_step,
)
from tests.integration.test_scale_out import WorkerProcess, database
from tests.pgproxy import PgProxy, pg_proxy

pytestmark = pytest.mark.postgres
__all__ = ["database", "pg_proxy"]  # fixtures


def db_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def wait_ready(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never became ready again")


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for part in started:
        part.stop()


def api_node(tmp_path: Path, url: str, parts: list[Any], **settings: Any) -> LiveServer:
    node = LiveServer(tmp_path / "shared", {**FAST, "database_url": url, "concurrency": 0})
    node.settings.update(settings)
    parts.append(node)
    return node.start()


def worker(tmp_path: Path, url: str, name: str, parts: list[Any], **settings: Any) -> Any:
    w = WorkerProcess(tmp_path / "shared", url, name, **settings).start()
    parts.append(w)
    return w


def test_a_short_database_cut_mid_job_does_not_cost_an_attempt(
    tmp_path: Path, database: str, pg_proxy: PgProxy, parts: list[Any]
) -> None:
    url = pg_proxy.url(db_name(database))
    lease = {"lease_s": 3.0, "step_delay_s": 0.03}
    node = api_node(tmp_path, url, parts, **lease)
    worker(tmp_path, url, "w1", parts, **lease)
    job = create(node.url, steps=120)
    wait_step(node.url, job["id"], 10)
    pg_proxy.cut()
    # While the database is unreachable the node says so (and answers 503, not 500).
    assert httpx.get(f"{node.url}/readyz", timeout=10).status_code == 503
    r = httpx.get(f"{node.url}/api/jobs/{job['id']}", timeout=10)
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem")
    time.sleep(1.0)
    pg_proxy.restore()
    final = wait_status(node.url, job["id"], {"completed", "failed", "cancelled"}, timeout=30)
    events = all_events(node.url, job["id"])
    assert_exactly_once(events)
    assert final["status"] == "completed" and final["attempt"] == 1, events[-3:]
    assert not [e for e in events if e["type"] == "retry"]
    wait_ready(node.url)


def test_an_outage_longer_than_the_lease_wedges_nothing(
    tmp_path: Path, database: str, pg_proxy: PgProxy, parts: list[Any]
) -> None:
    url = pg_proxy.url(db_name(database))
    cfg = {"lease_s": 1.0, "step_delay_s": 0.03}
    nodes = [api_node(tmp_path, url, parts, **cfg) for _ in range(2)]
    workers = [worker(tmp_path, url, f"w{n}", parts, **cfg) for n in (1, 2)]
    job = create(nodes[0].url, steps=100)
    wait_step(nodes[0].url, job["id"], 5)
    pg_proxy.cut()
    time.sleep(3.0)  # several leases: the busy worker must give the attempt up
    pg_proxy.restore()
    for node in nodes:
        wait_ready(node.url)
    # The interrupted job finishes (as a later attempt), and new work still flows.
    later = [create(nodes[1].url, steps=5) for _ in range(3)]
    for j in [job, *later]:
        final = wait_status(nodes[1].url, j["id"], {"completed", "failed", "cancelled"}, 30)
        assert final["status"] == "completed", final
        assert_exactly_once(all_events(nodes[0].url, j["id"]))
    assert all(w.proc.poll() is None for w in workers), "a worker process died"


def test_a_killed_listen_connection_loses_no_event(
    tmp_path: Path, database: str, parts: list[Any]
) -> None:
    a = api_node(tmp_path, database, parts, step_delay_s=0.03)
    worker(tmp_path, database, "w1", parts, step_delay_s=0.03)
    job = create(a.url, steps=100)
    got = read_sse(a.url, job["id"], 0, limit=5)[1]
    admin = create_engine(database, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%' "
                "AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    admin.dispose()
    assert killed >= 2  # the API node's and the worker's
    got += read_sse(a.url, job["id"], got[-1]["seq"])[1]
    assert_exactly_once(got)
    assert got[-1]["type"] == "completed"


def test_sigterm_to_a_worker_hands_the_job_to_the_other_at_the_same_attempt(
    tmp_path: Path, database: str, parts: list[Any]
) -> None:
    # A lease far longer than the test: only a hand-back (not the reaper) can move the job.
    cfg = {"lease_s": 60.0, "step_delay_s": 0.05}
    node = api_node(tmp_path, database, parts, **cfg)
    workers = {n: worker(tmp_path, database, n, parts, **cfg) for n in ("w1", "w2")}
    job = create(node.url, steps=150)  # 7.5 s: still running when the signal lands
    wait_step(node.url, job["id"], 10)
    owner = next(e for e in all_events(node.url, job["id"]) if e["type"] == "running")
    victim = workers[owner["data"]["worker"].removesuffix("-1")]
    victim.proc.send_signal(signal.SIGTERM)
    assert victim.proc.wait(20) == 0, victim.log_path.read_text()[-2000:]
    final = wait_status(node.url, job["id"], {"completed", "failed", "cancelled"}, timeout=30)
    events = all_events(node.url, job["id"])
    assert_exactly_once(events)
    assert final["status"] == "completed" and final["attempt"] == 1
    assert not [e for e in events if e["type"] == "retry"]
    back = [e for e in events if e["type"] == "queued" and e["data"].get("reason")]
    assert len(back) == 1, [(e["type"], e["attempt"], e["data"]) for e in events[-12:]]
    assert back[0]["data"]["reason"] == "handed_back"
    assert back[0]["data"]["worker"] == owner["data"]["worker"] and back[0]["attempt"] == 1
    runners = [e["data"]["worker"] for e in events if e["type"] == "running"]
    assert runners[0] == owner["data"]["worker"] and runners[1] != runners[0]


def test_safelight_node_name_is_used_by_the_worker_command(
    tmp_path: Path, database: str, parts: list[Any]
) -> None:
    node = api_node(tmp_path, database, parts)
    w = WorkerProcess(tmp_path / "shared", database, "ignored")
    w.args = w.args[: w.args.index("--name")]  # no flag: the environment must win
    w.env["SAFELIGHT_NODE_NAME"] = "from-env"
    w.start()
    parts.append(w)
    job = create(node.url, steps=3)
    wait_status(node.url, job["id"], {"completed"})
    running = next(e for e in all_events(node.url, job["id"]) if e["type"] == "running")
    assert running["data"]["worker"] == "from-env-1"


def test_a_flag_beats_safelight_node_name(tmp_path: Path, database: str, parts: list[Any]) -> None:
    node = api_node(tmp_path, database, parts)
    w = WorkerProcess(tmp_path / "shared", database, "from-flag")
    w.env["SAFELIGHT_NODE_NAME"] = "from-env"
    w.start()
    parts.append(w)
    job = create(node.url, steps=3)
    wait_status(node.url, job["id"], {"completed"})
    running = next(e for e in all_events(node.url, job["id"]) if e["type"] == "running")
    assert running["data"]["worker"] == "from-flag-1"


def test_two_api_nodes_started_at_once_on_an_empty_database(tmp_path: Path, database: str) -> None:
    nodes = [
        LiveServer(tmp_path / f"d{n}", {**FAST, "database_url": database, "concurrency": 0})
        for n in range(2)
    ]
    procs = []
    try:
        # Both launched before either has touched the database.
        for n in nodes:
            with n.log_path.open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            *(sys.executable, "-m", "safelight", "serve", "--host", "127.0.0.1"),
                            *("--port", str(n.port), "--data-dir", str(n.data_dir)),
                        ],
                        env=n.env(),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        for node, proc in zip(nodes, procs, strict=True):
            node.proc = proc
            wait_ready(node.url)
        engine = create_engine(database)
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            assert version == HEAD
        engine.dispose()
        job = create(nodes[0].url)
        assert httpx.get(f"{nodes[1].url}/api/jobs/{job['id']}").status_code == 200
    finally:
        for node in nodes:
            node.stop()
