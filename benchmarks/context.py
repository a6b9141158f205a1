"""What every scenario shares: the configuration, scratch and log directories, notes."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.config import GATE_STEPS, Config, Phase, console


class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.root = Path(tempfile.mkdtemp(prefix="safelight-bench-", dir=cfg.data_root))
        self.logs = cfg.output.parent / "logs"
        self.notes: list[str] = []
        # (phase, transport) -> mean event frame bytes the app sent
        self.app_shape: dict[tuple[str, str], float] = {}

    @staticmethod
    def app_settings(phase: Phase | None = None) -> dict[str, Any]:
        timing = (
            {"step_delay_s": phase.step_delay_s, "progress_interval_s": phase.progress_interval_s}
            if phase
            else {}
        )
        return {
            **timing,
            "max_streams_per_client": 1_000_000,
            "create_rate_per_min": 1_000_000,
            "queue_limit": 1000,
            "min_free_bytes": 0,
            "log_level": "warning",
        }

    def note(self, text: str) -> None:
        self.notes.append(text)
        console.print(f"[yellow]note:[/] {text}")

    def gates_needed(self, phase: Phase, transport: str = "ws") -> int:
        c = self.cfg
        # Connecting 1,000 subscribers takes 2-3 s here; cover about 10 ms each, at least
        # 8 s.  Each unused gate is cancelled while still queued, which appends one
        # `position` event to the measured job: a few, not dozens.  If connecting takes
        # longer, the run says so in its notes (raise --gate-s).
        cover = c.gate_s if c.gate_s is not None else max(8.0, c.subscribers * 0.01)
        if transport == "poll":
            cover *= 4  # a poller's first answer is a whole request through FastAPI
        return max(1, math.ceil(cover / (GATE_STEPS * phase.step_delay_s)))
