"""Scenarios that the integration suite already covers, folded into the chaos table.

Each row runs the existing test function (imported, not copied) once per trial against a
fresh server, so the table says how often it held; the assertions, and what they check,
stay where they are.  The imports are renamed so pytest does not collect them twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST, LiveServer
from tests.integration.test_jobs_api import (
    test_a_poison_pill_fails_after_exactly_max_attempts as poison_pill,
)
from tests.integration.test_jobs_api import (
    test_a_worker_crash_is_retried_by_the_reaper as worker_crash,
)
from tests.integration.test_jobs_api import (
    test_idempotency_key_replay_mismatch_and_concurrency as idempotency,
)
from tests.integration.test_transports import (
    test_cursor_beyond_last_seq as cursor_ahead,
)
from tests.integration.test_transports import (
    test_last_event_id_resumes_sse as last_event_id,
)
from tests.integration.test_transports import (
    test_random_disconnects_lose_and_repeat_nothing as random_disconnects,
)
from tests.integration.test_transports import (
    test_server_killed_mid_job_then_restarted as killed_mid_job,
)

Check = Callable[[Callable[..., LiveServer]], None]


@contextmanager
def servers(root: Path) -> Iterator[Callable[..., LiveServer]]:
    """A ``live_server``-style factory whose servers stop when the trial ends."""
    made: list[LiveServer] = []
    root.mkdir(parents=True, exist_ok=True)

    def factory(**settings: Any) -> LiveServer:
        server = LiveServer(root / f"data{len(made)}", {**FAST, **settings})
        made.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in made:
            server.stop()


def fold(run: Any, tmp_path: Path, checks: list[Check]) -> None:
    """Run every check once per trial; a failing assertion fails the trial (and the test,
    with the original message)."""
    for trial in run.trials():
        for n, check in enumerate(checks):
            with servers(tmp_path / f"t{trial}-{n}") as factory:
                try:
                    check(factory)
                except AssertionError as exc:
                    run.fail(f"{getattr(check, '__name__', check)}: {str(exc)[:160]}")
                    raise
        run.count()
    assert run.passed == run.trials_run, run.row()


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r1_worker_crash_mid_job(tmp_path: Path, scenario: Any) -> None:
    run = scenario("R1", "worker crashes mid-job (E): reaper requeues, attempt +1", trials=3)
    fold(run, tmp_path, [worker_crash])


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r3_poison_pill(tmp_path: Path, scenario: Any) -> None:
    run = scenario("R3", "poison pill: fails after exactly max_attempts", trials=2)
    fold(run, tmp_path, [poison_pill])


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r4_server_killed_mid_stream(tmp_path: Path, scenario: Any) -> None:
    run = scenario("R4", "SIGKILL + restart mid-job, resume over SSE/poll/WS", trials=2)
    fold(run, tmp_path, [killed_mid_job])


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r5_replay_edges(tmp_path: Path, scenario: Any) -> None:
    run = scenario("R5", "replay edges: Last-Event-ID, cursor beyond the log", trials=1)
    fold(run, tmp_path, [last_event_id, cursor_ahead])


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r7_client_side_random_disconnects(tmp_path: Path, scenario: Any) -> None:
    run = scenario("R7c", "client drops every 0-3 events, WS/SSE/poll resume", trials=1)
    checks: list[Check] = [
        lambda f, t=t: random_disconnects(f, t)  # type: ignore[misc]
        for t in ("ws", "sse", "poll")
    ]
    fold(run, tmp_path, checks)


@pytest.mark.timeout(1800)  # the long tier runs many trials
def test_r10_duplicate_submit(tmp_path: Path, scenario: Any) -> None:
    run = scenario("R10", "Idempotency-Key: replay, mismatch, 20 concurrent", trials=2)
    fold(run, tmp_path, [idempotency])
