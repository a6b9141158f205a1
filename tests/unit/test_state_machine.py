"""Every allowed and every forbidden transition of the job state machine."""

from __future__ import annotations

import itertools

import pytest

from safelight.types import TERMINAL, TRANSITIONS, IllegalTransition, JobStatus, check_transition

ALLOWED = {
    (JobStatus.QUEUED, JobStatus.RUNNING),
    (JobStatus.QUEUED, JobStatus.CANCELLED),
    (JobStatus.QUEUED, JobStatus.FAILED),
    (JobStatus.RUNNING, JobStatus.UPLOADING),
    (JobStatus.RUNNING, JobStatus.FAILED),
    (JobStatus.RUNNING, JobStatus.CANCELLED),
    (JobStatus.RUNNING, JobStatus.QUEUED),
    (JobStatus.UPLOADING, JobStatus.COMPLETED),
    (JobStatus.UPLOADING, JobStatus.FAILED),
    (JobStatus.UPLOADING, JobStatus.CANCELLED),
    (JobStatus.UPLOADING, JobStatus.QUEUED),
    (JobStatus.FAILED, JobStatus.QUEUED),
}


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED))
def test_allowed_transitions_pass(old: JobStatus, new: JobStatus) -> None:
    check_transition(old, new)


FORBIDDEN = sorted(set(itertools.product(JobStatus, JobStatus)) - ALLOWED)


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_forbidden_transitions_raise_with_a_clear_message(old: JobStatus, new: JobStatus) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(old, new)
    assert f"from {old} to {new}" in str(info.value)


def test_table_matches_the_allowed_set() -> None:
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert table == ALLOWED


def test_completed_and_cancelled_are_absorbing() -> None:
    assert TRANSITIONS[JobStatus.COMPLETED] == frozenset()
    assert TRANSITIONS[JobStatus.CANCELLED] == frozenset()
    assert {s for s in JobStatus if s.terminal} == TERMINAL
    assert not JobStatus.QUEUED.terminal and JobStatus.RUNNING.active
