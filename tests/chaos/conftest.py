"""The chaos suite: reliability (R*) and security (S*) scenarios from
research/reliability-anchors.md section 5, readable as one table.

Each scenario is a test that asks for the ``scenario`` fixture, runs ``trials`` trials and
records its counts and figures.  ``scripts/chaos`` runs the long tier
(``SAFELIGHT_CHAOS_TRIALS`` large) and prints the table; the README's test command runs the
fast tier (the default trial counts) as part of pytest.

    def test_r6_blackhole(scenario):
        run = scenario("R6", "blackholed WebSocket resumes by cursor", trials=3)
        for _ in run.trials():
            ...
            run.count(lost=0, duplicated=0, stuck=0)
        run.figure("resume_p99_s", 0.41)

A scenario passes when every trial finished and lost, duplicated and stuck are all 0;
the test itself should also assert that (so a failure names what broke).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def full_scale() -> bool:
    """``SAFELIGHT_CHAOS_SCALE=full`` (``scripts/chaos``' default): the research's client
    counts and outage lengths; otherwise a scaled-down fast tier for CI."""
    return os.environ.get("SAFELIGHT_CHAOS_SCALE", "fast") == "full"


def trial_factor() -> float:
    """Multiplier on each scenario's fast-tier trial count (``scripts/chaos`` raises it)."""
    return float(os.environ.get("SAFELIGHT_CHAOS_TRIALS", "1"))


@dataclass
class Scenario:
    id: str
    title: str
    trials_planned: int
    trials_run: int = 0
    passed: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _trial_ok: bool = True

    def trials(self) -> Iterator[int]:
        for n in range(self.trials_planned):
            self._trial_ok = True
            self.trials_run += 1
            yield n
            if self._trial_ok:
                self.passed += 1

    def count(self, *, lost: int = 0, duplicated: int = 0, stuck: int = 0) -> None:
        """Add one trial's counts; any non-zero count marks the trial failed."""
        self.lost += lost
        self.duplicated += duplicated
        self.stuck += stuck
        if lost or duplicated or stuck:
            self._trial_ok = False

    def fail(self, why: str) -> None:
        """Mark the current trial failed for a reason other than lost/dup/stuck."""
        self._trial_ok = False
        self.notes.append(why)

    def figure(self, name: str, value: Any) -> None:
        self.figures[name] = value

    def note(self, text: str) -> None:
        self.notes.append(text)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "trials": self.trials_run,
            "passed": self.passed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "stuck": self.stuck,
            "figures": self.figures,
            "notes": self.notes,
            "seconds": round(time.monotonic() - self.started, 2),
        }


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Callable[..., Scenario]]:
    made: list[Scenario] = []

    def factory(id: str, title: str, trials: int = 1) -> Scenario:
        s = Scenario(id, title, max(1, round(trials * trial_factor())))
        made.append(s)
        return s

    yield factory
    report = os.environ.get("SAFELIGHT_CHAOS_REPORT")
    if report:
        failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
        with Path(report).open("a", encoding="utf-8") as f:
            for s in made:
                row = s.row()
                if failed:
                    row["notes"] = [*row["notes"], "test failed (see pytest output)"]
                    row["passed"] = min(row["passed"], row["trials"] - 1)
                f.write(json.dumps(row) + "\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep
