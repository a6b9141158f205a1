"""What a benchmark run measures: flags -> ``Config``, job shapes (``Phase``), targets."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
BARE_TRANSPORTS = ("ws", "sse")  # the bare server broadcasts on these two
# ...and also parks long polls, for the memory floor of a held HTTP request:
BARE_IDLE_TRANSPORTS = ("ws", "sse", "poll")
SCHEMA = "safelight-bench/1"
GATE_STEPS = 150  # the API's maximum
PREVIEW_INTERVAL_S = 1.0  # Settings.preview_interval_s default (left as is)
# Issue 11's targets, all ratios against the bare server measured in the same run (the
# machine is shared, so absolute numbers move with its load; ratios move much less).
TARGET_PCT_OF_BARE = {"ws": 80.0, "sse": 70.0}  # steady fan-out deliveries/s, 1,000 subs
TARGET_P99_VS_BARE = 1.2  # app p99 <= bare p99 + 20 %
TARGET_IDLE_KB = {"ws": 20.0, "sse": 15.0, "poll": 8.0}  # per idle stream / parked poll
TARGET_POLL_VS_SSE_CPU = 2.0  # long-poll CPU per delivered event <= 2x SSE's
TARGETS: dict[str, Any] = {
    "throughput_pct_of_bare": TARGET_PCT_OF_BARE,
    "p99_vs_bare": TARGET_P99_VS_BARE,
    "idle_kb_per_stream": TARGET_IDLE_KB,
    "poll_cpu_vs_sse": TARGET_POLL_VS_SSE_CPU,
}
# Wide enough for the tables when stdout is a file or a pipe (CI logs).
console = Console(width=None if sys.stdout.isatty() else 170)


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    subscribers: int = 1000
    steps: int = 150
    step_delay_s: float = 0.03
    # Below the step pace, so the app's job writes one progress per step: the same
    # events the bare server sends (0.02 s coalesced about a third of them).
    progress_interval_s: float = 0.005
    paced_rate: float = 5.0  # events/s of the paced phase (0 = skip it)
    paced_s: float = 5.0
    size: int = 64
    transports: tuple[str, ...] = ("ws", "sse", "poll")
    bare: bool = True
    idle: int = 1000
    idle_transports: tuple[str, ...] = ("ws", "sse", "poll")
    client_procs: int = 2
    idle_client_procs: int = 1
    gate_s: float | None = None  # None: estimated from the subscriber count
    connect_concurrency: int = 64
    profile: bool = False
    output: Path = ROOT / "bench-results" / "latest.json"
    data_root: Path | None = None
    keep: bool = False
    quick: bool = False
    server_src: Path | None = None  # run the app from this src/ tree (A/B a patch)
    scale: tuple[int, ...] = ()  # subscriber counts for the scaling curve (steady job)
    report: bool = False  # write docs/benchmarks.md + PNGs (needs the [bench] extra)
    report_path: Path = ROOT / "docs" / "benchmarks.md"
    peer_users: int = 0  # the Gradio side by side: K users (0 = skip)
    peer_pace_s: float = 0.1
    gradio_python: Path | None = None  # a Python with the [bench-peer] extra
    overhead_rounds: int = 5  # progress + previews overhead, builtin (0 = skip)

    def scale_phase(self) -> Phase:
        """The scaling curve's job: the steady shape, under its own name."""
        return Phase("scale", self.steps, self.step_delay_s, self.progress_interval_s)

    def phases(self) -> list[Phase]:
        out = [Phase("steady", self.steps, self.step_delay_s, self.progress_interval_s)]
        if self.paced_rate > 0:
            steps = max(1, min(GATE_STEPS, round(self.paced_rate * self.paced_s)))
            delay = 1.0 / self.paced_rate
            out.append(Phase("paced", steps, delay, min(self.progress_interval_s, delay / 2)))
        return out


QUICK: dict[str, Any] = {
    "subscribers": 20,
    "steps": 20,
    "paced_rate": 10.0,
    "paced_s": 1.0,
    "idle": 20,
    "client_procs": 1,
    "gate_s": 5.0,
    "overhead_rounds": 1,
}


@dataclass(frozen=True)
class Phase:
    """One shape of measured job: ``steady`` (the configured stream, which saturates the
    app at 1,000 subscribers) or ``paced`` (a few events per second, like production)."""

    name: str
    steps: int
    step_delay_s: float
    progress_interval_s: float

    @property
    def duration_s(self) -> float:
        return self.steps * self.step_delay_s

    @property
    def nominal_events(self) -> int:
        """Events an unloaded server emits for the job: running, one progress per step,
        a preview about every preview_interval_s (plus the first), uploading, completed."""
        return self.steps + 4 + math.floor(self.duration_s / PREVIEW_INTERVAL_S)

    @property
    def nominal_rate(self) -> float:
        """Events per second per subscriber when nothing is late."""
        return self.nominal_events / self.duration_s


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Fan-out latency/throughput (full app vs bare uvicorn) and memory per "
        "idle stream.  See docs/benchmarks.md.",
    )
    p.add_argument("-n", "--subscribers", type=int, default=d.subscribers)
    p.add_argument("--steps", type=int, default=d.steps, help="steps of the measured job (1..150)")
    p.add_argument(
        "--step-delay", type=float, default=d.step_delay_s, help="SAFELIGHT_STEP_DELAY_S"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measured job length in seconds (sets --step-delay = duration / steps)",
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=d.progress_interval_s,
        help="SAFELIGHT_PROGRESS_INTERVAL_S",
    )
    p.add_argument(
        "--paced-rate",
        type=float,
        default=d.paced_rate,
        help="steps/s of the second, paced job (latency below saturation; 0 = skip)",
    )
    p.add_argument("--paced-s", type=float, default=d.paced_s, help="paced job length (s)")
    p.add_argument("--size", type=int, default=d.size, help="image width = height (px)")
    p.add_argument("--transports", default=",".join(d.transports), help="fan-out: ws,sse,poll")
    p.add_argument("--no-bare", action="store_true", help="skip the bare uvicorn ceiling")
    p.add_argument(
        "--idle", type=int, default=d.idle, help="idle streams for the memory test (0 = skip)"
    )
    p.add_argument("--idle-transports", default=",".join(d.idle_transports))
    p.add_argument(
        "--client-procs",
        type=int,
        default=d.client_procs,
        help="client processes for the fan-out runs (subscribers are split evenly)",
    )
    p.add_argument("--gate-s", type=float, default=None, help="gate job coverage in seconds")
    p.add_argument("--connect-concurrency", type=int, default=d.connect_concurrency)
    p.add_argument(
        "--profile",
        action="store_true",
        help="record each fan-out server with py-spy (adds overhead; see the JSON)",
    )
    p.add_argument("-o", "--output", type=Path, default=d.output)
    p.add_argument("--data-root", type=Path, default=None, help="where data dirs go (tmp)")
    p.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    p.add_argument(
        "--server-src",
        type=Path,
        default=None,
        help="run `safelight serve` from this src/ directory (PYTHONPATH) to measure a patch",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny configuration (20 subscribers, 20 steps, 20 idle streams) for tests",
    )
    p.add_argument(
        "--scale",
        default="",
        help="scaling curve: comma-separated subscriber counts, e.g. 10,100,1000,5000",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="write docs/benchmarks.md (results section) and PNG plots (pip install -e .[bench])",
    )
    p.add_argument("--report-path", type=Path, default=d.report_path)
    p.add_argument(
        "--peer",
        type=int,
        default=d.peer_users,
        help="side by side with Gradio: K concurrent users, 30-step paced jobs (0 = skip)",
    )
    p.add_argument(
        "--overhead",
        type=int,
        default=d.overhead_rounds,
        help="rounds of the progress + previews overhead test (builtin; 0 = skip)",
    )
    p.add_argument("--peer-pace", type=float, default=d.peer_pace_s, help="s per step")
    p.add_argument(
        "--gradio-python",
        type=Path,
        default=None,
        help="python of a venv with the [bench-peer] extra (gradio), for --peer",
    )
    a = p.parse_args(argv)
    cfg = Config(
        subscribers=a.subscribers,
        steps=a.steps,
        step_delay_s=a.step_delay if a.duration is None else a.duration / a.steps,
        progress_interval_s=a.progress_interval,
        paced_rate=a.paced_rate,
        paced_s=a.paced_s,
        size=a.size,
        transports=_split(a.transports, {"ws", "sse", "poll"}),
        bare=not a.no_bare,
        idle=a.idle,
        idle_transports=_split(a.idle_transports, {"ws", "sse", "poll"}),
        client_procs=a.client_procs,
        gate_s=a.gate_s,
        connect_concurrency=a.connect_concurrency,
        profile=a.profile,
        output=a.output,
        data_root=a.data_root,
        keep=a.keep,
        quick=a.quick,
        server_src=a.server_src.resolve() if a.server_src else None,
        scale=tuple(int(x) for x in a.scale.split(",") if x.strip()),
        report=a.report,
        report_path=a.report_path,
        peer_users=a.peer,
        peer_pace_s=a.peer_pace,
        gradio_python=a.gradio_python,
        overhead_rounds=a.overhead,
    )
    if a.quick:
        # Quick overrides the defaults, not what the caller set explicitly.
        given = argv if argv is not None else sys.argv[1:]
        flags = {arg.split("=", 1)[0] for arg in given}
        explicit = {k for k in QUICK if f"--{k.replace('_', '-')}" in flags}
        if "-n" in flags:
            explicit.add("subscribers")
        cfg = replace(cfg, **{k: v for k, v in QUICK.items() if k not in explicit})
    if not 1 <= cfg.steps <= GATE_STEPS:
        p.error("--steps must be 1..150 (the API's limit)")
    if cfg.subscribers < 1 or cfg.client_procs < 1:
        p.error("--subscribers and --client-procs must be >= 1")
    return cfg


def _split(raw: str, allowed: set[str]) -> tuple[str, ...]:
    items = tuple(x.strip() for x in raw.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad:
        raise SystemExit(f"scripts/bench: unknown transport(s) {bad}; use {sorted(allowed)}")
    return items
