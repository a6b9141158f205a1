"""Model-based test of the store (Hypothesis state machine): any interleaving of client
actions (create, cancel, retry), worker actions (claim, progress, fail, complete, crash
with a stale token) and reaper passes keeps the invariants of
research/reliability-anchors.md section 4:

* seq is gapless per job and ``last_seq`` equals the log length;
* terminal states absorb (only failed -> queued by an explicit retry);
* attempts never exceed max_attempts;
* a stale lease token can change nothing;
* the status is what the log says it is.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from safelight.errors import Conflict, LeaseLost
from safelight.store.sql import SqlStore
from safelight.types import EventType, JobStatus

ERROR = {
    "type": "provider",
    "code": "x",
    "message": "m",
    "retryable": True,
    "next_steps": ["retry"],
    "detail": {},
}
STATUS_OF_EVENT = {
    EventType.QUEUED: JobStatus.QUEUED,
    EventType.RUNNING: JobStatus.RUNNING,
    EventType.UPLOADING: JobStatus.UPLOADING,
    EventType.COMPLETED: JobStatus.COMPLETED,
    EventType.FAILED: JobStatus.FAILED,
    EventType.CANCELLED: JobStatus.CANCELLED,
}


def pick(data: st.DataObject, pool: list[str]) -> str:
    """One of ``pool``, drawn with bounds that do not depend on its size: how many jobs
    are claimable at a step depends on timing, and a strategy whose bounds change between
    replays is an error to Hypothesis (FlakyStrategyDefinition)."""
    return pool[data.draw(st.integers(min_value=0, max_value=1 << 16)) % len(pool)]


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.store = SqlStore.for_sqlite_file(Path(self.dir.name) / "m.db")
        self.jobs: list[str] = []
        self.tokens: dict[str, str] = {}  # job -> live lease token
        self.stale: dict[str, str] = {}  # job -> a token that lost its lease

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    @rule()
    def create(self) -> None:
        job, _ = self.store.create_job(
            settings={}, parent_id=None, manage_token_hash="h", max_attempts=3, queue_limit=1000
        )
        self.jobs.append(job.id)

    @rule()
    def claim(self) -> None:
        claimed = self.store.claim("w", 60_000)
        if claimed is not None:
            job, _ = claimed
            assert job.lease_token is not None
            self.tokens[job.id] = job.lease_token

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), action=st.sampled_from(["progress", "upload", "complete", "fail"]))
    def work(self, data: st.DataObject, action: str) -> None:
        job_id = pick(data, sorted(self.tokens))
        token = self.tokens[job_id]
        job = self.store.get_job(job_id)
        assert job is not None
        try:
            if action == "progress":
                self.store.worker_event(job_id, token, EventType.PROGRESS, {"step": 1})
            elif action == "upload" and job.status is JobStatus.RUNNING:
                self.store.worker_event(
                    job_id, token, EventType.UPLOADING, {}, status=JobStatus.UPLOADING
                )
            elif action == "complete" and job.status is JobStatus.UPLOADING:
                self.store.worker_event(
                    job_id, token, EventType.COMPLETED, {}, status=JobStatus.COMPLETED
                )
                del self.tokens[job_id]
            elif action == "fail":
                self.store.worker_event(
                    job_id,
                    token,
                    EventType.FAILED,
                    {"error": ERROR},
                    status=JobStatus.FAILED,
                    error=ERROR,
                )
                del self.tokens[job_id]
        except LeaseLost:
            # Only possible if the job left the worker (cancelled by the reaper path).
            assert job.status.terminal or not job.status.active or job.lease_token != token
            self.tokens.pop(job_id, None)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = pick(data, self.jobs)
        before = self.store.get_job(job_id)
        assert before is not None
        job, _ = self.store.request_cancel(job_id)
        if before.status.terminal:
            assert job.status is before.status
        if job.status is JobStatus.CANCELLED:
            self.tokens.pop(job_id, None)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = pick(data, self.jobs)
        before = self.store.get_job(job_id)
        assert before is not None
        try:
            job, _ = self.store.retry(job_id)
        except Conflict:
            assert before.status is not JobStatus.FAILED or before.attempt >= 3
            return
        assert before.status is JobStatus.FAILED and job.attempt == before.attempt + 1

    @precondition(lambda self: self.tokens)
    @rule()
    def crash_everything(self) -> None:
        """The process dies: every held lease becomes stale and the reaper runs."""
        self.stale.update(self.tokens)
        self.tokens.clear()
        self.store.reap(everything=True)

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def zombie_write(self, data: st.DataObject) -> None:
        job_id = pick(data, sorted(self.stale))
        before = self.store.get_job(job_id)
        try:
            self.store.worker_event(
                job_id, self.stale[job_id], EventType.COMPLETED, {}, status=JobStatus.COMPLETED
            )
        except LeaseLost:
            pass
        else:
            raise AssertionError("a stale lease token changed a job")
        assert self.store.get_job(job_id) == before

    @invariant()
    def logs_are_gapless_and_agree_with_rows(self) -> None:
        for job_id in self.jobs:
            job = self.store.get_job(job_id)
            assert job is not None
            events = self.store.read_events(job_id, 0)
            assert [e.seq for e in events] == list(range(1, job.last_seq + 1))
            assert 1 <= job.attempt <= job.max_attempts
            statuses = [STATUS_OF_EVENT[e.type] for e in events if e.type in STATUS_OF_EVENT]
            assert statuses[-1] is job.status
            for prev, nxt in itertools.pairwise(statuses):
                assert prev not in (JobStatus.COMPLETED, JobStatus.CANCELLED)
                if prev is JobStatus.FAILED:
                    assert nxt is JobStatus.QUEUED


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
