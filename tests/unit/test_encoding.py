"""Event encoding: the wire shape of API.md, RFC 3339 milliseconds, SSE-safe JSON."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from safelight.models import Event, iso_ms
from safelight.types import EventType


def test_iso_ms_is_rfc3339_utc_with_milliseconds() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1795600000123) == "2026-11-25T09:46:40.123Z"
    assert iso_ms(None) is None


def test_event_wire_shape() -> None:
    ev = Event(
        "abc",
        7,
        EventType.PROGRESS,
        1,
        1795600000123,
        {"step": 5, "total_steps": 30, "fraction": 0.1667, "eta_s": 4.2},
    )
    assert json.loads(ev.json) == {
        "job_id": "abc",
        "seq": 7,
        "type": "progress",
        "attempt": 1,
        "ts": "2026-11-25T09:46:40.123Z",
        "data": {"step": 5, "total_steps": 30, "fraction": 0.1667, "eta_s": 4.2},
    }
    assert ev.json is ev.json  # encoded once, shared by every subscriber


@given(st.text())
def test_encoded_events_never_contain_raw_line_breaks(text: str) -> None:
    # One SSE `data:` line per event: a CR or LF would let a prompt forge events.
    ev = Event("j", 1, EventType.FAILED, 1, 0, {"error": {"message": text}})
    assert "\n" not in ev.json and "\r" not in ev.json
    assert json.loads(ev.json)["data"]["error"]["message"] == text


def test_job_ids_never_start_with_a_dash_or_underscore() -> None:
    """Regression: ``safelight retry -kr4q9...`` failed, argparse took the id for an option
    (1 id in 32 started with ``-`` or ``_``)."""
    from safelight.store.sql import new_id

    ids = [new_id() for _ in range(5000)]
    assert all(i[0].isalnum() for i in ids)
    assert all(len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)
