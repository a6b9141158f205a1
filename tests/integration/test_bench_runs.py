"""``scripts/bench --quick`` runs end to end and writes a well-formed report.

Only the shape of the report is checked, never a number: timings depend on the machine and
its load (docs/benchmarks.md).  The quick configuration still exercises every scenario, so
none can rot: both job shapes (steady, paced) over every transport through the full app
and over WS/SSE through the bare uvicorn server, a two-point scaling curve, the
idle-memory servers (with /healthz timed), and the Markdown + PNG report writer.
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
            "--scale",
            "5,10",
            "--report",
            "--report-path",
            str(tmp_path / "docs" / "benchmarks.md"),
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

    main = [r for r in report["fanout"] if r["phase"] != "scale"]
    runs = {(r["phase"], r["server"], r["transport"]): r for r in main}
    assert set(runs) == {
        (phase, server, transport)
        for phase in ("steady", "paced")
        for server, transport in (("app", "ws"), ("bare", "ws"), ("app", "sse"), ("bare", "sse"))
    } | {("steady", "app", "poll"), ("paced", "app", "poll")}
    assert len(runs) == len(main)
    scale = {
        (r["subscribers"], r["server"], r["transport"])
        for r in report["fanout"]
        if r["phase"] == "scale"
    }
    assert scale == {
        (n, server, transport)
        for n in (5, 10)
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
        assert run["latency_cdf"][-1][0] == 100
    assert runs["steady", "app", "ws"]["job"]["steps"] == report["config"]["steps"]

    assert {(r["phase"], r["transport"]) for r in report["comparison"]} == {
        (phase, transport)
        for phase in ("steady", "paced", "scale")
        for transport in ("ws", "sse", "poll")
        if (phase, transport) != ("scale", "poll")
    }
    assert {r["phase"] for r in report["poll_vs_sse"]} == {"steady", "paced"}
    for row in report["comparison"]:
        assert _is_number_or_none(row["throughput_pct_of_bare"])
        assert _is_number_or_none(row["app_p99_ms"])
        assert isinstance(row["order_violations"], int)

    idle = {(r["server"], r["transport"]): r for r in report["idle_memory"]}
    assert set(idle) == {
        ("app", "ws"),
        ("bare", "ws"),
        ("app", "sse"),
        ("bare", "sse"),
        ("app", "poll"),
        ("bare", "poll"),  # the floor of a parked HTTP request
    }
    for row in idle.values():
        assert row["requested"] == report["config"]["idle"]
        assert isinstance(row["rss_before_kb"], int) and row["rss_before_kb"] > 0
        assert isinstance(row["rss_open_kb"], int) and row["rss_open_kb"] > 0
        assert _is_number_or_none(row["kb_per_stream"])
        assert isinstance(row["healthz_ms_max"], float)

    cost = report["overhead"]
    assert (
        cost["rounds"] == 1 and len(cost["wall_s"]["with"]) == len(cost["wall_s"]["without"]) == 1
    )
    assert _is_number_or_none(cost["wall_overhead_pct"])

    md = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "<!-- bench:results:start -->" in md and "### Scaling curve" in md
    assert "### What progress + previews add" in md
    for png in ("latency-cdf", "scaling-deliveries", "scaling-p99", "scaling-memory"):
        path = tmp_path / "docs" / "benchmarks" / f"{png}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"benchmarks/{png}.png" in md
