"""``scripts/bench``: the runner.  Scenarios live in ``benchmarks/scenarios/`` (one module
each), the console tables in ``tables.py``, the Markdown + PNG report in ``report.py``.

See docs/benchmarks.md for what each scenario measures and how to read the numbers.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from benchmarks.clients import raise_nofile
from benchmarks.config import (
    BARE_IDLE_TRANSPORTS,
    BARE_TRANSPORTS,
    SCHEMA,
    TARGETS,
    console,
    parse_args,
)
from benchmarks.context import Bench
from benchmarks.procs import environment, uptime
from benchmarks.scenarios.fanout import fanout_app, fanout_bare
from benchmarks.scenarios.idle import idle_memory
from benchmarks.scenarios.overhead import overhead
from benchmarks.scenarios.peer import peer
from benchmarks.stats import compare, poll_vs_sse
from benchmarks.tables import print_peer, print_report


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    raise_nofile()
    started = time.time()
    load_before = uptime()
    bench = Bench(cfg)
    fanout: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    peer_rows: list[dict[str, Any]] = []
    overhead_row: dict[str, Any] | None = None
    console.print(f"[bold]scripts/bench[/] {load_before}")

    def attempt(name: str, run: Callable[[], Any]) -> Any:
        """One scenario failing (a timeout on a loaded machine) must not lose the others."""
        try:
            return run()
        except (RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
            bench.note(f"{name} failed: {type(exc).__name__}: {exc}")
            return None

    def collect(rows: list[dict[str, Any]], name: str, run: Callable[[], Any]) -> None:
        row = attempt(name, run)
        if row is not None:
            rows.append(row)

    try:
        for phase in cfg.phases():
            for t in cfg.transports:
                collect(fanout, f"{phase.name} app/{t}", partial(fanout_app, bench, t, phase))
                if cfg.bare and t in BARE_TRANSPORTS:
                    collect(fanout, f"{phase.name} bare/{t}", partial(fanout_bare, bench, t, phase))
        for n in cfg.scale:
            bench.cfg = replace(cfg, subscribers=n)
            scale = cfg.scale_phase()
            for t in (t for t in cfg.transports if t in BARE_TRANSPORTS):
                collect(fanout, f"scale {n} app/{t}", partial(fanout_app, bench, t, scale))
                if cfg.bare:
                    collect(fanout, f"scale {n} bare/{t}", partial(fanout_bare, bench, t, scale))
        bench.cfg = cfg
        if cfg.idle > 0:
            for t in cfg.idle_transports:
                collect(idle, f"idle app/{t}", partial(idle_memory, bench, "app", t))
                if cfg.bare and t in BARE_IDLE_TRANSPORTS:
                    collect(idle, f"idle bare/{t}", partial(idle_memory, bench, "bare", t))
        if cfg.overhead_rounds > 0:
            overhead_row = attempt("overhead", partial(overhead, bench))
        if cfg.peer_users > 0:
            peer_rows = attempt("side by side", partial(peer, bench)) or []
    finally:
        if not cfg.keep:
            shutil.rmtree(bench.root, ignore_errors=True)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "load": {"before": load_before, "after": uptime()},
        "environment": environment(cfg, bench.root),
        "config": {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in vars(cfg).items()
        },
        "targets": TARGETS,
        "fanout": fanout,
        "comparison": compare(fanout),
        "poll_vs_sse": poll_vs_sse(fanout),
        "idle_memory": idle,
        "peer": peer_rows,
        "overhead": overhead_row,
        "notes": bench.notes,
        "rerun": " ".join(["scripts/bench", *(argv if argv is not None else sys.argv[1:])]),
    }
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print_peer(peer_rows)
    if overhead_row:
        console.print(
            f"progress + previews (builtin): wall {overhead_row['wall_overhead_pct']:+.2f} %, "
            f"server CPU {overhead_row['cpu_overhead_pct']:+.2f} % per job"
        )
    console.print(f"\nJSON: {cfg.output}")
    if cfg.report:
        from benchmarks.report import write_report  # matplotlib: only for --report

        console.print(f"report: {write_report(report, cfg.report_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
