"""The worker's supervisor is woken by the provider thread, not by polling (issue 11).

A step that is due for a progress write wakes the supervisor at once
(``AttemptState.nudge``), so a job whose steps are faster than the supervisor's tick still
gets a ``progress`` event for (nearly) every step when the progress interval allows it.
The tick here is 0.25 s (a 30 s lease) against a 20 ms step pace: a supervisor that only
looked at the state on its tick would write at most three or four progress events for
these 20 steps (0.4 s).  A few steps may still coalesce when a commit or the first
preview's write is slower than a step, which is the intended behaviour.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from safelight.api.schemas import validate_create
from safelight.config import Settings
from safelight.jobs.worker import AttemptState
from safelight.models import Event
from safelight.runtime import Runtime
from safelight.store.sql import SqlStore
from safelight.types import EventType

STEPS = 20


async def _run_job(settings: Settings, body: dict[str, object]) -> list[Event]:
    runtime = Runtime.build(settings)
    await runtime.start()
    try:
        infos = {name: p.info for name, p in runtime.service.providers.items()}
        spec = validate_create(body, infos, settings.provider)
        job, _ = await runtime.service.create(spec.settings, spec.parent_id)
        for _ in range(500):
            events = await runtime.store.read(SqlStore.read_events, job.id, 0)
            if events and events[-1].terminal:
                return events
            await asyncio.sleep(0.01)
        raise AssertionError(f"job did not finish: {[e.type for e in events]}")
    finally:
        await runtime.stop()


def test_every_step_is_written_when_steps_outpace_the_tick(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        concurrency=1,
        step_delay_s=0.02,
        progress_interval_s=0.0,
        lease_s=30.0,  # supervisor tick: min(lease / 3, 0.25) = 0.25 s
        preview_interval_s=60.0,
    )
    body = {"prompt": "wake-ups", "steps": STEPS, "width": 64, "height": 64}
    events = asyncio.run(_run_job(settings, body))
    assert events[-1].type is EventType.COMPLETED
    steps = [e.data["step"] for e in events if e.type is EventType.PROGRESS]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    assert len(steps) >= STEPS - 4, steps


def test_a_nudge_wakes_the_waiting_supervisor_once() -> None:
    async def scenario() -> tuple[bool, bool, float]:
        state = AttemptState()
        wake = asyncio.get_running_loop().create_future()
        state.wake = wake
        started = time.monotonic()
        threading.Thread(target=state.nudge).start()
        await asyncio.wait({wake}, timeout=5.0)
        waited = time.monotonic() - started
        state.nudge()  # nothing waits any more: a no-op
        return wake.done(), state.wake is None, waited

    done, cleared, waited = asyncio.run(scenario())
    assert done and cleared
    assert waited < 5.0  # woken by the nudge, not by the timeout
