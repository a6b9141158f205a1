"""``scripts/bench``: the runner.  Scenarios live in ``benchmarks/scenarios/`` (one module
each), the console tables in ``tables.py``, the Markdown + PNG report in ``report.py``.

See docs/benchmarks.md for what each scenario measures and how to read the numbers.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.clients import raise_nofile
from benchmarks.config import BARE_TRANSPORTS, SCHEMA, TARGETS, console, parse_args
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
    try:
        for phase in cfg.phases():
            for transport in cfg.transports:
                fanout.append(fanout_app(bench, transport, phase))
                if cfg.bare and transport in BARE_TRANSPORTS:
                    fanout.append(fanout_bare(bench, transport, phase))
        for n in cfg.scale:
            bench.cfg = replace(cfg, subscribers=n)
            for transport in (t for t in cfg.transports if t in BARE_TRANSPORTS):
                fanout.append(fanout_app(bench, transport, cfg.scale_phase()))
                if cfg.bare:
                    fanout.append(fanout_bare(bench, transport, cfg.scale_phase()))
        bench.cfg = cfg
        if cfg.idle > 0:
            for transport in cfg.idle_transports:
                idle.append(idle_memory(bench, "app", transport))
                if cfg.bare and transport in BARE_TRANSPORTS:
                    idle.append(idle_memory(bench, "bare", transport))
        if cfg.overhead_rounds > 0:
            overhead_row = overhead(bench)
        if cfg.peer_users > 0:
            peer_rows = peer(bench)
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
