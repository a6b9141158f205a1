"""The final-database invariants every PostgreSQL chaos scenario must leave true
(research/engine-anchors.md section 8.2), read straight from the tables:

- every job's ``seq`` runs 1..last_seq with no gap (``lost``);
- at most one terminal event per job after its last manual retry, and exactly one
  ``completed`` event for a completed job (``duplicated``);
- ``attempt <= max_attempts``;
- no ``running``/``uploading`` job whose lease has expired by the database clock, and,
  when ``settled``, no job still queued or active (``stuck``);
- a completed job's ``completed`` event is of the winning attempt (the job's), and each
  image it lists exists in that attempt's blob directory with the size it claims.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class Verdict:
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    other: list[str] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.stuck or self.other)

    def why(self) -> str:
        return (
            f"lost={self.lost} duplicated={self.duplicated} stuck={self.stuck} "
            f"other={self.other[:5]}"
        )


def check(database_url: str, blob_dir: Path, *, settled: bool = True) -> Verdict:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            now = conn.execute(
                text("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")
            ).scalar_one()
            jobs = {r["id"]: dict(r) for r in conn.execute(text("SELECT * FROM jobs")).mappings()}
            events: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in conn.execute(
                text("SELECT job_id, seq, type, attempt, ts_ms, data FROM job_events ORDER BY seq")
            ).mappings():
                events[r["job_id"]].append({**r, "data": json.loads(r["data"])})
    finally:
        engine.dispose()
    v = Verdict(jobs=jobs, events=dict(events))
    for job_id, job in jobs.items():
        log = events.get(job_id, [])
        if [e["seq"] for e in log] != list(range(1, job["last_seq"] + 1)):
            v.lost += 1
            v.other.append(f"{job_id}: seq not 1..{job['last_seq']}")
        manual = [i for i, e in enumerate(log) if e["type"] == "retry"]
        manual = [i for i in manual if log[i]["data"].get("reason") == "manual"]
        tail = log[manual[-1] :] if manual else log
        if sum(e["type"] in TERMINAL for e in tail) > 1:
            v.duplicated += 1
            v.other.append(f"{job_id}: more than one terminal event")
        if job["attempt"] > job["max_attempts"]:
            v.other.append(f"{job_id}: attempt {job['attempt']} > {job['max_attempts']}")
        active = job["status"] in ("running", "uploading")
        if active and (job["lease_expires_ms"] or 0) < now:
            v.stuck += 1
            v.other.append(f"{job_id}: {job['status']} with an expired lease")
        elif settled and job["status"] not in TERMINAL:
            v.stuck += 1
            v.other.append(f"{job_id}: still {job['status']}")
        if job["status"] == "completed":
            _check_completed(v, job, log, blob_dir)
    return v


def _check_completed(
    v: Verdict, job: dict[str, Any], log: list[dict[str, Any]], blob_dir: Path
) -> None:
    done = [e for e in log if e["type"] == "completed"]
    if len(done) != 1:
        v.duplicated += 1
        v.other.append(f"{job['id']}: {len(done)} completed events")
        return
    event = done[0]
    if event["attempt"] != job["attempt"]:
        v.other.append(f"{job['id']}: completed by attempt {event['attempt']}, not the job's")
    for index, image in enumerate(event["data"]["images"]):
        path = blob_dir / job["id"] / str(event["attempt"]) / f"image-{index}.png"
        if not path.is_file() or path.stat().st_size != image["bytes"]:
            v.other.append(f"{job['id']}: image {index} of the winning attempt is missing")
