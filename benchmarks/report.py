"""``scripts/bench --report``: the run as Markdown tables and matplotlib PNGs.

Only the part of docs/benchmarks.md between the two ``bench:results`` markers is
rewritten (the prose around it is kept); the plots go to docs/benchmarks/.  matplotlib
is imported here and nowhere else (the ``[bench]`` extra), so a plain install can still
run the benchmark itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from benchmarks.stats import cell

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
COLOURS = {"ws": "tab:blue", "sse": "tab:orange", "poll": "tab:green", "gradio": "tab:red"}


def write_report(report: dict[str, Any], md_path: Path) -> Path:
    fig_dir = md_path.parent / "benchmarks"
    fig_dir.mkdir(parents=True, exist_ok=True)
    section = "\n".join(_section(report, fig_dir, md_path.parent))
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n"
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    md_path.write_text(text)
    return md_path


# -- markdown ---------------------------------------------------------------------------


def _machine(report: dict[str, Any]) -> str:
    env = report["environment"]
    source = (
        f"commit {env.get('git_commit')}"
        + (" (uncommitted changes in src/)" if env.get("git_src_dirty") else "")
        if "git_commit" in env
        else f"--server-src {env.get('server_src')}"
    )
    versions = env["versions"]
    return (
        f"{env['cpus']} CPUs, {env['platform']}, Python {env['python']}, uvicorn "
        f"{versions.get('uvicorn')} ({env['uvicorn_http']}, {env['uvicorn_loop']}), "
        f"{source}"
    )


def _n(value: Any, digits: int = 1) -> str:
    return cell(value, digits, verdict=("**pass**", "**miss**"))


def _figure(lines: list[str], rel: str, caption: str, report: dict[str, Any]) -> None:
    lines += [
        f"![{caption}]({rel})",
        "",
        f"*{caption}.* Reproduce: `{report['rerun']}` (JSON: `bench-results/latest.json`). "
        f"Machine: {_machine(report)}; load before `{_load(report, 'before')}`, after "
        f"`{_load(report, 'after')}`.",
        "",
    ]


def _load(report: dict[str, Any], when: str) -> str:
    text: str = report["load"][when]
    return text.split("load average:")[-1].strip()


def _section(report: dict[str, Any], fig_dir: Path, md_dir: Path) -> list[str]:
    rel = fig_dir.relative_to(md_dir).as_posix()
    fanout = report["fanout"]
    lines = [
        "## Latest results",
        "",
        f"Written by `scripts/bench --report` at {report['started_at']} "
        f"({report['duration_s']:.0f} s). Machine: {_machine(report)}. Load average before "
        f"`{_load(report, 'before')}`, after `{_load(report, 'after')}` (the machine is "
        "shared: absolute numbers move with its load, the app/bare ratios much less).",
        f"Reproduce: `{report['rerun']}`.",
        "",
    ]
    main = [r for r in fanout if r["phase"] != "scale"]
    if main:
        lines += [
            "### Fan-out",
            "",
            "| job | server/transport | N | ev/sub | p50 ms | p99 ms | p99.9 ms | deliveries/s "
            "| µs CPU/delivery (net) | server CPU % | box busy % | order |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in main:
            lat, eps = r["latency_ms"], r["events_per_subscriber"]
            cpu = _n(r["server_cpu_us_per_delivery"])
            if r.get("server_cpu_us_per_delivery_net") is not None and r["server"] == "app":
                cpu += f" ({_n(r['server_cpu_us_per_delivery_net'])})"
            bad = r["violations"]["total"]
            lines.append(
                f"| {r['phase']} {r['nominal_rate_per_s']:.0f}/s | {r['server']}/{r['transport']} "
                f"| {r['connected']:,} | {eps['min']}-{eps['max']} | {_n(lat['p50'])} "
                f"| {_n(lat['p99'])} | {_n(lat['p99_9'])} | {_n(r['throughput_per_s'], 0)} "
                f"| {cpu} | {_n(r['server_cpu_pct'])} | {_n(r['machine_busy_pct'])} "
                f"| {'ok' if bad == 0 else f'{bad} violations'} |"
            )
        lines.append("")
    rows = [r for r in report["comparison"] if r["phase"] != "scale"]
    if rows:
        lines += [
            "### Targets (issue 11, ratios in the same run)",
            "",
            "| job | transport | app/s | bare/s | % of bare | target | app p99 | bare p99 "
            "| p99 <= bare + 20 % | CPU efficiency % of bare |",
            "|---|---|---:|---:|---:|---|---:|---:|---|---:|",
        ]
        targets = report["targets"]["throughput_pct_of_bare"]
        for r in rows:
            target = (
                f">= {targets[r['transport']]:g} %: {_n(r['throughput_pass'])}"
                if r["throughput_pass"] is not None
                else "-"
            )
            lines.append(
                f"| {r['phase']} | {r['transport']} | {_n(r['app_throughput_per_s'], 0)} "
                f"| {_n(r['bare_throughput_per_s'], 0)} | {_n(r['throughput_pct_of_bare'])} "
                f"| {target} | {_n(r['app_p99_ms'])} | {_n(r['bare_p99_ms'])} "
                f"| {_n(r['p99_pass'])} | {_n(r['cpu_efficiency_pct_of_bare'])} |"
            )
        lines.append("")
    poll = report.get("poll_vs_sse") or []
    if poll:
        lines += [
            "### Long polling vs SSE (server CPU per delivered event, same job shape)",
            "",
            "| job | SSE µs/event (net) | poll µs/event (net) | ratio | target <= "
            f"{report['targets']['poll_cpu_vs_sse']:g}x |",
            "|---|---:|---:|---:|---|",
        ]
        for r in poll:
            lines.append(
                f"| {r['phase']} | {_n(r['sse_us'])} | {_n(r['poll_us'])} | {_n(r['ratio'], 2)} "
                f"| {_n(r['pass'])} |"
            )
        lines.append("")
    if main:
        path = fig_dir / "latency-cdf.png"
        _plot_cdf(main, path)
        lines += ["### Latency CDF", ""]
        _figure(lines, f"{rel}/{path.name}", "Latency CDF per transport, app vs bare", report)
    scale = [r for r in fanout if r["phase"] == "scale"]
    if scale:
        lines += _scale_table(scale)
        for name, key, ylabel, title in (
            ("scaling-deliveries.png", "throughput_per_s", "deliveries/s", "Deliveries/s"),
            ("scaling-p99.png", "p99", "p99 latency (ms)", "p99 latency"),
            ("scaling-memory.png", "rss_mb", "server RSS with N connected (MB)", "Memory"),
        ):
            path = fig_dir / name
            _plot_scale(scale, key, ylabel, path)
            _figure(lines, f"{rel}/{name}", f"{title} vs subscribers, app vs bare", report)
    idle = report["idle_memory"]
    if idle:
        lines += [
            "### Memory per idle stream",
            "",
            "| server/transport | streams | KB per stream | target | /healthz max ms |",
            "|---|---:|---:|---|---:|",
        ]
        for r in idle:
            target = "-" if r["target_kb"] is None else f"<= {r['target_kb']:g}: {_n(r['pass'])}"
            lines.append(
                f"| {r['server']}/{r['transport']} | {r['streams']:,} | {_n(r['kb_per_stream'])} "
                f"| {target} | {_n(r.get('healthz_ms_max'))} |"
            )
        lines.append("")
    cost = report.get("overhead")
    if cost:
        lines += [
            "### What progress + previews add to a generation (builtin)",
            "",
            f"{cost['steps']} steps x {cost['step_delay_s'] * 1000:.0f} ms, "
            f"{cost['size']}x{cost['size']}, median of {cost['rounds']} alternating rounds, "
            "production intervals (progress 0.2 s, preview 1 s) vs both off "
            "(benchmarks/scenarios/overhead.py). The diffusers provider: "
            "`scripts/bench-diffusers`.",
            "",
            "| | with | without | overhead | target <= 3 % (wall) |",
            "|---|---:|---:|---:|---|",
            f"| job wall s (started -> finished) | {_median(cost['wall_s']['with'])} "
            f"| {_median(cost['wall_s']['without'])} | {cost['wall_overhead_pct']:+.2f} % "
            f"| {_n(cost['pass'])} |",
            f"| server CPU s per job | {_median(cost['cpu_s']['with'])} "
            f"| {_median(cost['cpu_s']['without'])} | {cost['cpu_overhead_pct']:+.2f} % | |",
            "",
        ]
    peer = report.get("peer") or []
    if peer:
        lines += _peer_table(peer)
    if report["notes"]:
        lines += ["Notes from the run:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return lines


def _scale_table(scale: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### Scaling curve (steady job)",
        "",
        "| N | transport | server | p50 ms | p99 ms | p99.9 ms | deliveries/s | µs CPU/delivery "
        "| RSS MB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(scale, key=lambda r: (r["transport"], r["subscribers"], r["server"])):
        lat = r["latency_ms"]
        lines.append(
            f"| {r['subscribers']:,} | {r['transport']} | {r['server']} | {_n(lat['p50'])} "
            f"| {_n(lat['p99'])} | {_n(lat['p99_9'])} | {_n(r['throughput_per_s'], 0)} "
            f"| {_n(r['server_cpu_us_per_delivery'])} | {_n(_rss_mb(r))} |"
        )
    lines.append("")
    return lines


def _peer_table(peer: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### Side by side with Gradio (same workload, same run)",
        "",
        f"{peer[0]['users']} users at once, each running a paced 30-step job (one progress "
        "update per step, a preview every 5 steps) and watching it to the end "
        "(benchmarks/scenarios/peer.py). Safelight runs the builtin renderer and commits every "
        "event durably to SQLite; the Gradio app only sleeps between yields. KB per user is "
        "the server's peak RSS growth during the run / users (the job's own memory included).",
        "",
        "| server | users | updates delivered | µs server CPU / update | ms server CPU / job "
        "| KB per user (peak) | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in peer:
        name = r["server"] + (f" {r['gradio_version']}" if r.get("gradio_version") else "")
        lines.append(
            f"| {name} | {r['users']} | {_n(r['updates'])} | {_n(r['cpu_us_per_update'])} "
            f"| {_n(r['cpu_ms_per_user_job'])} | {_n(r['kb_per_viewer'])} | {_n(r['p50_ms'])} "
            f"| {_n(r['p99_ms'])} | {r['errors']} |"
        )
    lines.append("")
    return lines


def _median(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:.3f}" if ordered else "-"


def _rss_mb(r: dict[str, Any]) -> float | None:
    kb = r.get("server_rss_kb_connected")
    return None if kb is None else kb / 1024


# -- plots ------------------------------------------------------------------------------


def _plot_cdf(runs: list[dict[str, Any]], path: Path) -> None:
    phases = sorted({r["phase"] for r in runs})
    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=True):
        for r in (r for r in runs if r["phase"] == phase):
            points = [(ms, q) for q, ms in r.get("latency_cdf", []) if ms is not None]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(
                xs,
                ys,
                color=COLOURS.get(r["transport"], "black"),
                linestyle="-" if r["server"] == "app" else "--",
                label=f"{r['server']}/{r['transport']}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("latency, commit to client receive (ms, log)")
        ax.set_ylabel("% of deliveries")
        ax.set_title(f"{phase} job, {runs[0]['subscribers']:,} subscribers")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_scale(runs: list[dict[str, Any]], key: str, ylabel: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for transport in sorted({r["transport"] for r in runs}):
        for server in ("app", "bare"):
            points = []
            for r in sorted(runs, key=lambda r: r["subscribers"]):
                if r["transport"] != transport or r["server"] != server:
                    continue
                value = (
                    r["latency_ms"]["p99"]
                    if key == "p99"
                    else _rss_mb(r)
                    if key == "rss_mb"
                    else r.get(key)
                )
                if value is not None:
                    points.append((r["subscribers"], value))
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    color=COLOURS.get(transport, "black"),
                    linestyle="-" if server == "app" else "--",
                    label=f"{server}/{transport}",
                )
    ax.set_xscale("log")
    ax.set_xlabel("subscribers (log)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
