"""The console tables of a run (rich)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from benchmarks.config import console
from benchmarks.stats import cell

# -- report -----------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    return cell(value, 1, unit, verdict=("[green]pass[/]", "[red]MISS[/]"))


def print_report(report: dict[str, Any]) -> None:
    env = report["environment"]
    source = (
        f"commit {env['git_commit']}, uncommitted changes in src: {env['git_src_dirty']}"
        if "git_commit" in env
        else "--server-src"
    )
    console.print(
        f"\n[bold]Safelight benchmark[/] {report['started_at']}  ({report['duration_s']:.0f} s)\n"
        f"load before: {report['load']['before']}\nload after:  {report['load']['after']}\n"
        f"safelight from {env['safelight_module']} ({source})\n"
        f"python {env['python']}, uvicorn {env['versions']['uvicorn']} "
        f"({env['uvicorn_http']}, {env['uvicorn_loop']}, wsproto), {env['cpus']} CPUs"
    )
    if report["fanout"]:
        t = Table(title="Fan-out: one job, N subscribers (latency = client receive - event ts)")
        for col in ("phase", "run", "N", "ev/sub", "p50 ms", "p99 ms", "max ms", "deliv/s"):
            t.add_column(col, justify="right")
        for col in ("prod/s", "srv CPU%", "µs CPU/deliv (net)", "client CPU%", "box busy%"):
            t.add_column(col, justify="right")
        t.add_column("order", justify="right")
        for r in report["fanout"]:
            lat = r["latency_ms"]
            eps = r["events_per_subscriber"]
            bad = r["violations"]["total"]
            t.add_row(
                f"{r['phase']} {r['nominal_rate_per_s']:.0f}/s",
                f"{r['server']}/{r['transport']}",
                f"{r['connected']}/{r['subscribers']}",
                f"{eps['min']}" if eps["min"] == eps["max"] else f"{eps['min']}-{eps['max']}",
                _fmt(lat["p50"]),
                _fmt(lat["p99"]),
                _fmt(lat["max"]),
                _fmt(r["throughput_per_s"]),
                _fmt(r["offered_per_s"]),
                _fmt(r["server_cpu_pct"]),
                _fmt(r["server_cpu_us_per_delivery"])
                + (
                    f" ({r['server_cpu_us_per_delivery_net']:.1f})"
                    if r["server"] == "app" and r.get("server_cpu_us_per_delivery_net") is not None
                    else ""
                ),
                " ".join(_fmt(x) for x in r["client_cpu_pct"]),
                _fmt(r["machine_busy_pct"]),
                "[green]ok[/]" if bad == 0 else f"[red]{bad}[/]",
            )
        console.print(t)
    if report["comparison"]:
        t = Table(
            title="Targets (issue 11): steady >= 80 % (WS) / 70 % (SSE) of bare; p99 <= bare + 20 %"
        )
        for col in ("phase", "transport", "app/s", "bare/s", "% of bare", "tput"):
            t.add_column(col, justify="right")
        for col in ("CPU eff. % of bare",):
            t.add_column(col, justify="right")
        for col in ("app p99", "bare p99", "p99", "order"):
            t.add_column(col, justify="right")
        for r in report["comparison"]:
            t.add_row(
                r["phase"],
                r["transport"],
                _fmt(r["app_throughput_per_s"]),
                _fmt(r["bare_throughput_per_s"]),
                _fmt(r["throughput_pct_of_bare"], " %"),
                _fmt(r["throughput_pass"]),
                _fmt(r["cpu_efficiency_pct_of_bare"], " %"),
                _fmt(r["app_p99_ms"], " ms"),
                _fmt(r["bare_p99_ms"], " ms"),
                _fmt(r["p99_pass"]),
                "[green]ok[/]"
                if r["order_violations"] == 0
                else f"[red]{r['order_violations']}[/]",
            )
        console.print(t)
    if report["idle_memory"]:
        t = Table(title="Memory per idle stream (server VmRSS delta / streams)")
        for col in ("run", "streams", "RSS before", "RSS open", "after close", "KB/stream"):
            t.add_column(col, justify="right")
        t.add_column("target", justify="right")
        for r in report["idle_memory"]:
            t.add_row(
                f"{r['server']}/{r['transport']}",
                _fmt(r["streams"]),
                _fmt(r["rss_before_kb"], " KB"),
                _fmt(r["rss_open_kb"], " KB"),
                _fmt(r["rss_after_close_kb"], " KB"),
                _fmt(r["kb_per_stream"]),
                "-" if r["target_kb"] is None else f"<= {r['target_kb']:g} {_fmt(r['pass'])}",
            )
        console.print(t)
    for r in report["fanout"]:
        prof = r.get("profile")
        if prof and "self" in prof:
            t = Table(title=f"py-spy {r['phase']} {r['server']}/{r['transport']}: top own time")
            t.add_column("own %", justify="right")
            t.add_column("frame")
            for row in prof["self"][:10]:
                t.add_row(f"{row['pct']:.1f}", row["frame"])
            console.print(t)
        for example in r["violations"]["examples"][:5]:
            label = f"{r['phase']} {r['server']}/{r['transport']}"
            console.print(f"[red]violation[/] {label}: {example}")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")


def print_peer(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    t = Table(title="Side by side: K users, paced 30-step jobs, progress per step, preview / 5")
    for col in ("server", "users", "updates", "µs CPU/update", "ms CPU/job", "KB/viewer"):
        t.add_column(col, justify="right")
    for col in ("p50 ms", "p99 ms", "errors"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            r["server"],
            _fmt(r["users"]),
            _fmt(r["updates"]),
            _fmt(r["cpu_us_per_update"]),
            _fmt(r["cpu_ms_per_user_job"]),
            _fmt(r["kb_per_viewer"]),
            _fmt(r["p50_ms"]),
            _fmt(r["p99_ms"]),
            _fmt(r["errors"]),
        )
    console.print(t)
