"""``scripts/bench --quick`` runs end to end and writes a well-formed report.

Only the shape of the report is checked, never a number: timings depend on the machine and
its load (docs/benchmarks.md).  The quick configuration still exercises every part: both
job shapes (steady, paced) over both transports through the full app and the bare uvicorn
server, and the idle-memory servers.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = (int, float)


def _is_number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, NUMBER) and not isinstance(value, bool))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_bench_writes_a_well_formed_report(tmp_path: Path) -> None:
    out = tmp_path / "results" / "latest.json"
    proc = subprocess.run(
        [
            str(ROOT / "scripts" / "bench"),
            "--quick",
            "--output",
            str(out),
            "--data-root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Fan-out" in proc.stdout
    assert "Memory per idle stream" in proc.stdout

    report = json.loads(out.read_text())
    assert report["schema"] == "safelight-bench/1"
    assert report["config"]["quick"] is True
    assert "load average" in report["load"]["before"]
    assert "load average" in report["load"]["after"]
    assert report["environment"]["cpus"] >= 1
    subscribers = report["config"]["subscribers"]

    runs = {(r["phase"], r["server"], r["transport"]): r for r in report["fanout"]}
    assert set(runs) == {
        (phase, server, transport)
        for phase in ("steady", "paced")
        for server in ("app", "bare")
        for transport in ("ws", "sse")
    }
    for run in runs.values():
        assert run["subscribers"] == subscribers
        assert isinstance(run["connected"], int)
        assert isinstance(run["deliveries"], int)
        assert isinstance(run["live_deliveries"], int)
        assert set(run["latency_ms"]) == {"p50", "p90", "p99", "p99_9", "max", "mean"}
        assert all(_is_number_or_none(v) for v in run["latency_ms"].values())
        for key in ("throughput_per_s", "offered_per_s", "server_cpu_us_per_delivery"):
            assert _is_number_or_none(run[key]), key
        assert isinstance(run["violations"]["total"], int)
        assert isinstance(run["violations"]["by_kind"], dict)
        assert isinstance(run["client_cpu_pct"], list)
    assert runs["steady", "app", "ws"]["job"]["steps"] == report["config"]["steps"]

    assert {(r["phase"], r["transport"]) for r in report["comparison"]} == {
        (phase, transport) for phase in ("steady", "paced") for transport in ("ws", "sse")
    }
    for row in report["comparison"]:
        assert _is_number_or_none(row["throughput_pct_of_bare"])
        assert _is_number_or_none(row["app_p99_ms"])
        assert isinstance(row["order_violations"], int)

    idle = {(r["server"], r["transport"]): r for r in report["idle_memory"]}
    assert set(idle) == {("app", "ws"), ("bare", "ws"), ("app", "sse"), ("bare", "sse")}
    for row in idle.values():
        assert row["requested"] == report["config"]["idle"]
        assert isinstance(row["rss_before_kb"], int) and row["rss_before_kb"] > 0
        assert isinstance(row["rss_open_kb"], int) and row["rss_open_kb"] > 0
        assert _is_number_or_none(row["kb_per_stream"])
