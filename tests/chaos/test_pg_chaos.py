"""PostgreSQL chaos scenarios (P1-P7; issue 13, research/engine-anchors.md T2-T10):
real API nodes and ``safelight worker`` processes on the local PostgreSQL, a fault per
scenario, then the final-database invariants of ``pg_invariants.check``.

``scripts/chaos --pg`` runs them with more trials; the fast tier runs one trial each.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.chaos.conftest import Scenario
from tests.chaos.pg_invariants import Verdict, check
from tests.conftest import FAST, LiveServer
from tests.integration.helpers import create, read_sse, wait_status, wait_step
from tests.integration.test_scale_out import WorkerProcess
from tests.pgdb import PG, temp_database
from tests.pgproxy import PgProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
DONE = {"completed", "failed", "cancelled"}


class Cluster:
    """One database, API nodes and workers sharing one blob directory (``self.data``)."""

    def __init__(self, root: Path, database: str, url: str | None = None, **settings: Any):
        self.root, self.database = root, database
        self.url = url or database  # what the nodes connect to (a proxy, perhaps)
        self.data = root / "shared"
        root.mkdir(parents=True, exist_ok=True)
        self.settings = {**FAST, **settings}
        self.nodes: list[LiveServer] = []
        self.workers: dict[str, WorkerProcess] = {}

    def node(self) -> LiveServer:
        s = {**self.settings, "database_url": self.url, "concurrency": 0}
        node = LiveServer(self.data, s)
        self.nodes.append(node)
        return node.start()

    def worker(self, name: str) -> WorkerProcess:
        w = WorkerProcess(self.data, self.url, name, **self.settings).start()
        self.workers[name] = w
        return w

    def owner(self, job_id: str) -> WorkerProcess:
        running = [e for e in self.events(job_id) if e["type"] == "running"]
        return self.workers[running[-1]["data"]["worker"].rsplit("-", 1)[0]]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        engine = create_engine(self.database)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT seq, type, attempt, ts_ms, data FROM job_events "
                    "WHERE job_id = :j ORDER BY seq"
                ),
                {"j": job_id},
            ).mappings()
            out = [{**r, "data": json.loads(r["data"])} for r in rows]
        engine.dispose()
        return out

    def verdict(self) -> Verdict:
        return check(self.database, self.data / "blobs")

    def stop(self) -> None:
        for part in [*self.workers.values(), *self.nodes]:
            if part.proc is not None and part.proc.poll() is None:
                part.proc.send_signal(signal.SIGCONT)  # a stopped one cannot exit
            part.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[tuple[Cluster, Any]] = []

    def build(proxy: PgProxy | None = None, **settings: Any) -> Cluster:
        db = temp_database("safelight_chaos")
        name = db.__enter__()
        database = f"{PG}/{name}"
        url = proxy.url(name) if proxy is not None else None
        c = Cluster(tmp_path / f"c{len(made)}", database, url, **settings)
        made.append((c, db))
        return c

    yield build
    for c, db in made:
        c.stop()
        db.__exit__(None, None, None)


def settle(url: str, job_ids: list[str], timeout: float = 60) -> None:
    for job_id in job_ids:
        wait_status(url, job_id, DONE, timeout=timeout)


def record(run: Scenario, v: Verdict) -> None:
    run.count(lost=v.lost, duplicated=v.duplicated, stuck=v.stuck)
    for why in v.other:
        run.fail(why)


def test_p1_four_workers_claim_200_jobs_exactly_once(
    scenario: Callable[..., Scenario], cluster: Callable[..., Cluster]
) -> None:
    run = scenario("P1", "4 workers x 200 jobs: each claimed exactly once", trials=1)
    rates = []
    for _ in run.trials():
        # A realistic lease: this scenario is about claiming, not about lease expiry.
        c = cluster(step_delay_s=0.0, queue_limit=1000, lease_s=10.0)
        node = c.node()
        for n in range(1, 5):
            c.worker(f"w{n}")
        with httpx.Client(timeout=10) as client:
            ids = []
            for _ in range(200):
                r = client.post(
                    f"{node.url}/api/jobs",
                    json={"prompt": "p", "steps": 1, "width": 64, "height": 64},
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        settle(node.url, ids)
        v = c.verdict()
        record(run, v)
        running = [e for log in v.events.values() for e in log if e["type"] == "running"]
        twice = sum(1 for log in v.events.values() if sum(e["type"] == "running" for e in log) != 1)
        run.count(duplicated=twice)
        assert twice == 0 and all(j["attempt"] == 1 for j in v.jobs.values())
        span_s = (max(e["ts_ms"] for e in running) - min(e["ts_ms"] for e in running)) / 1000
        rates.append(round(len(running) / max(span_s, 1e-3), 1))
        assert v.ok, v.why()
    run.figure("claims_per_s", min(rates))


def test_p2_sigkill_a_worker_mid_job(
    scenario: Callable[..., Scenario], cluster: Callable[..., Cluster]
) -> None:
    run = scenario("P2", "SIGKILL a worker mid-job: the other finishes it", trials=1)
    reclaim = []
    for _ in run.trials():
        c = cluster(lease_s=1.0, step_delay_s=0.03)
        node = c.node()
        c.worker("w1"), c.worker("w2")
        job = create(node.url, steps=100)
        wait_step(node.url, job["id"], 3)
        c.owner(job["id"]).kill()
        killed_ms = time.time() * 1000
        final = wait_status(node.url, job["id"], DONE, timeout=30)
        log = c.events(job["id"])
        second = [e for e in log if e["type"] == "running"][1]
        reclaim.append(round((second["ts_ms"] - killed_ms) / 1000, 2))
        assert final["status"] == "completed" and final["attempt"] == 2
        assert [e["data"]["reason"] for e in log if e["type"] == "retry"] == ["worker_lost"]
        v = c.verdict()
        record(run, v)
        assert v.ok, v.why()
    run.figure("reclaim_s_max", max(reclaim))
    run.figure("lease_s", 1.0)


def test_p3_a_job_that_kills_its_worker_every_time_fails_at_the_cap(
    scenario: Callable[..., Scenario], cluster: Callable[..., Cluster]
) -> None:
    run = scenario("P3", "crash loop: a worker-killing job fails at the cap", trials=1)
    for _ in run.trials():
        c = cluster(lease_s=1.0, step_delay_s=0.01, max_attempts=3)
        node = c.node()
        c.worker("w1"), c.worker("w2")
        poison = create(node.url, steps=20, prompt="boom [[fail:exit@2#*]]")
        normal = [create(node.url, steps=5) for _ in range(4)]
        deaths = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the test is the workers' supervisor
            for w in c.workers.values():
                if w.proc is not None and w.proc.poll() is not None:
                    deaths += 1
                    w.start()
            states = [httpx.get(f"{node.url}/api/jobs/{j['id']}").json() for j in [poison, *normal]]
            if all(s["status"] in DONE for s in states):
                break
            time.sleep(0.05)
        final = httpx.get(f"{node.url}/api/jobs/{poison['id']}").json()
        assert final["status"] == "failed" and final["error"]["code"] == "worker_lost"
        assert final["attempt"] == 3 and deaths >= 3
        for j in normal:
            assert httpx.get(f"{node.url}/api/jobs/{j['id']}").json()["status"] == "completed"
        v = c.verdict()
        record(run, v)
        assert v.ok, v.why()
        run.figure("worker_deaths", deaths)


def test_p4_a_zombie_past_its_lease_changes_nothing(
    scenario: Callable[..., Scenario], cluster: Callable[..., Cluster]
) -> None:
    run = scenario("P4", "SIGSTOP past the lease, SIGCONT: the zombie changes nothing", trials=1)
    for _ in run.trials():
        c = cluster(lease_s=1.0, step_delay_s=0.03)
        node = c.node()
        c.worker("w1"), c.worker("w2")
        job = create(node.url, steps=80, num_images=2)
        wait_step(node.url, job["id"], 3)
        zombie = c.owner(job["id"])
        assert zombie.proc is not None
        zombie.proc.send_signal(signal.SIGSTOP)
        final = wait_status(node.url, job["id"], DONE, timeout=40)
        before = c.events(job["id"])
        zombie.proc.send_signal(signal.SIGCONT)
        time.sleep(1.5)  # the zombie wakes, tries its heartbeat and writes: all fenced
        after = c.events(job["id"])
        assert after == before, "the zombie changed the log"
        assert final["status"] == "completed" and final["attempt"] == 2
        v = c.verdict()
        record(run, v)
        assert v.ok, v.why()


def test_p5_a_killed_listen_connection_loses_no_event(
    scenario: Callable[..., Scenario], cluster: Callable[..., Cluster]
) -> None:
    run = scenario("P5", "pg_terminate_backend on LISTEN: no gap", trials=1)
    for _ in run.trials():
        c = cluster(step_delay_s=0.03)
        node = c.node()
        c.worker("w1")
        job = create(node.url, steps=80)
        got = read_sse(node.url, job["id"], 0, limit=5)[1]
        engine = create_engine(c.database, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "datname = current_database() AND query LIKE 'LISTEN%' "
                    "AND pid <> pg_backend_pid()"
                )
            )
        engine.dispose()
        got += read_sse(node.url, job["id"], got[-1]["seq"])[1]
        seqs = [e["seq"] for e in got]
        run.count(
            lost=len(set(range(1, seqs[-1] + 1)) - set(seqs)), duplicated=len(seqs) - len(set(seqs))
        )
        assert seqs == list(range(1, len(seqs) + 1)) and got[-1]["type"] == "completed"
        v = c.verdict()
        record(run, v)
        assert v.ok, v.why()


def test_p6_a_database_outage_mid_job(
    scenario: Callable[..., Scenario], cluster: Callable[..., Cluster]
) -> None:
    run = scenario("P6", "database cut mid-job (proxy): jobs finish, nodes recover", trials=1)
    recovery = []
    for trial in run.trials():
        proxy = PgProxy()
        try:
            c = cluster(proxy, lease_s=3.0, step_delay_s=0.03)
            node = c.node()
            c.worker("w1"), c.worker("w2")
            jobs = [create(node.url, steps=80) for _ in range(2)]
            wait_step(node.url, jobs[0]["id"], 5)
            proxy.cut()
            time.sleep(1.0 + trial % 3)  # inside the lease, then past it
            proxy.restore()
            restored = time.monotonic()
            while httpx.get(f"{node.url}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() - restored < 30, "the node never became ready"
                time.sleep(0.05)
            recovery.append(round(time.monotonic() - restored, 2))
            later = create(node.url, steps=3)
            settle(node.url, [j["id"] for j in [*jobs, later]])
            v = c.verdict()
            record(run, v)
            assert v.ok, v.why()
        finally:
            proxy.close()
    run.figure("ready_again_s_max", max(recovery))


def test_p7_cancel_through_one_node_of_a_job_behind_another(
    scenario: Callable[..., Scenario], cluster: Callable[..., Cluster]
) -> None:
    run = scenario("P7", "cancel via node A of a job running behind node B", trials=1)
    latency = []
    for _ in run.trials():
        c = cluster(lease_s=30.0, step_delay_s=0.05)
        a, b = c.node(), c.node()
        c.worker("w1")
        job = create(b.url, steps=150)
        wait_step(b.url, job["id"], 3)
        sent_ms = time.time() * 1000
        r = httpx.post(
            f"{a.url}/api/jobs/{job['id']}/cancel",
            headers={"Authorization": f"Bearer {job['manage_token']}"},
        )
        assert r.status_code == 202
        final = wait_status(b.url, job["id"], DONE, timeout=20)
        assert final["status"] == "cancelled"
        done = next(e for e in c.events(job["id"]) if e["type"] == "cancelled")
        latency.append(round((done["ts_ms"] - sent_ms) / 1000, 3))
        v = c.verdict()
        record(run, v)
        assert v.ok, v.why()
    run.figure("cancel_latency_s_max", max(latency))
