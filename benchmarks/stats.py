"""Statistics over client results: percentiles, per-run summaries, app vs bare."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from benchmarks.config import TARGET_P99_VS_BARE, TARGET_PCT_OF_BARE, TARGET_POLL_VS_SSE_CPU

# -- statistics -------------------------------------------------------------------------


def cell(
    value: Any, digits: int = 1, unit: str = "", verdict: tuple[str, str] = ("pass", "miss")
) -> str:
    """One table cell, for the console tables and the Markdown report alike: ``-`` for
    no value, ``verdict`` for a target's bool, thousands separators for numbers."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return verdict[0] if value else verdict[1]
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise(results: list[dict[str, Any]], connected: list[dict[str, Any]]) -> dict[str, Any]:
    by_seq: dict[int, tuple[str, float, list[float]]] = {}
    for r in results:
        for seq, (kind, ts, values) in r["by_seq"].items():
            by_seq.setdefault(seq, (kind, ts, []))[2].extend(values)
    latencies = sorted(x for _, _, values in by_seq.values() for x in values)
    by_type: dict[str, list[float]] = {}
    for kind, _, values in by_seq.values():
        by_type.setdefault(kind, []).extend(values)
    per_event = []
    for seq, (kind, ts, values) in by_seq.items():
        values.sort()
        median = percentile(values, 50) or 0.0
        per_event.append((median, seq, kind, ts, values[-1], len(values)))
    per_event.sort(reverse=True)
    live = sum(r["live_deliveries"] for r in results)
    deliveries = sum(r["deliveries"] for r in results)
    firsts = [r["first_live_ts"] for r in results if r["first_live_ts"] is not None]
    lasts = [r["last_live_recv"] for r in results if r["last_live_recv"] is not None]
    last_ts = [r["last_live_ts"] for r in results if r["last_live_ts"] is not None]
    window = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
    produced = (max(last_ts) - min(firsts)) if firsts and last_ts else 0.0
    violations: Counter[str] = Counter()
    close_codes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    final_seqs: Counter[str] = Counter()
    examples: list[str] = []
    for r in results:
        violations.update(r["violations"])
        close_codes.update(r["close_codes"])
        errors.update(r["errors"])
        final_seqs.update(r["final_seqs"])
        examples.extend(r["violation_examples"])
    welcomed = sum(r["welcomed"] for r in results)
    return {
        "subscribers": sum(r["subscribers"] for r in results),
        "connected": welcomed,
        "connect_s": round(max(c["connect_s"] for c in connected), 2),
        "deliveries": deliveries,
        "live_deliveries": live,
        "events_per_subscriber": {
            "min": min(r["events_per_sub_min"] for r in results),
            "max": max(r["events_per_sub_max"] for r in results),
        },
        "frame_bytes_mean": round(sum(r["frame_bytes"] for r in results) / deliveries, 1)
        if deliveries
        else None,
        "latency_ms": {
            "p50": _round(percentile(latencies, 50)),
            "p90": _round(percentile(latencies, 90)),
            "p99": _round(percentile(latencies, 99)),
            "p99_9": _round(percentile(latencies, 99.9)),
            "max": _round(latencies[-1] if latencies else None),
            "mean": _round(sum(latencies) / len(latencies) if latencies else None),
        },
        # For the report's CDF plot: (quantile %, latency ms) at 0, 2, ... 98, 99, 99.5, 99.9, 100.
        "latency_cdf": [
            [
                q,
                _round(
                    percentile(latencies, q) if q > 0 else (latencies[0] if latencies else None)
                ),
            ]
            for q in (*range(0, 100, 2), 99, 99.5, 99.9, 100)
        ],
        "latency_by_type": {
            kind: {
                "n": len(values),
                "p50": _round(percentile(sorted(values), 50)),
                "p99": _round(percentile(sorted(values), 99)),
                "max": _round(max(values)),
            }
            for kind, values in sorted(by_type.items())
        },
        # The events that were slow for everyone (median over subscribers): a stall of
        # the server shows up here, a slow client does not.
        "slowest_events": [
            {
                "seq": seq,
                "type": kind,
                "ts": round(ts, 3),
                "p50_ms": _round(p50),
                "max_ms": _round(mx),
                "n": n,
            }
            for p50, seq, kind, ts, mx, n in per_event[:5]
        ],
        "window_s": round(window, 3),
        "throughput_per_s": round(live / window, 1) if window > 0 else None,
        # What a server that keeps up would deliver: live deliveries over the span of
        # their ts (the producer's pace).  The tail is how far delivery lagged behind.
        "produce_window_s": round(produced, 3),
        "offered_per_s": round(live / produced, 1) if produced > 0 else None,
        "tail_s": round(window - produced, 3),
        "client_cpu_pct": [_round(r.get("cpu_pct")) for r in results],
        "violations": {
            "total": sum(violations.values()),
            "by_kind": dict(violations),
            "examples": examples[:10],
        },
        "close_codes": dict(close_codes),
        "final_seqs": dict(final_seqs),
        "errors": dict(errors.most_common(10)),
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def compare(fanout: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """App against bare per phase and transport.  The throughput target is judged on the
    steady phase only (both servers pushed past what they can deliver); in the paced
    phase the ratio only says whether the app kept up."""
    rows = []
    by = {(r["phase"], r["server"], r["transport"], r["subscribers"]): r for r in fanout}
    for phase, server, transport, n in by:
        if server != "app":
            continue
        app = by[phase, "app", transport, n]
        bare = by.get((phase, "bare", transport, n))
        p99 = app["latency_ms"]["p99"]
        bare_p99 = bare["latency_ms"]["p99"] if bare else None
        row: dict[str, Any] = {
            "phase": phase,
            "transport": transport,
            "subscribers": n,
            "nominal_deliveries_per_s": app["nominal_deliveries_per_s"],
            "app_throughput_per_s": app["throughput_per_s"],
            "bare_throughput_per_s": bare["throughput_per_s"] if bare else None,
            "throughput_pct_of_bare": None,
            "cpu_efficiency_pct_of_bare": None,
            "app_p99_ms": p99,
            "bare_p99_ms": bare_p99,
            "p99_pass": None
            if p99 is None or bare_p99 is None
            else p99 <= bare_p99 * TARGET_P99_VS_BARE,
            "throughput_pass": None,
            "order_violations": app["violations"]["total"],
        }
        if bare and bare["throughput_per_s"] and app["throughput_per_s"]:
            pct = 100.0 * app["throughput_per_s"] / bare["throughput_per_s"]
            row["throughput_pct_of_bare"] = round(pct, 1)
            target = TARGET_PCT_OF_BARE[transport]
            row["throughput_pass"] = pct >= target if phase == "steady" else None
        if bare and bare["server_cpu_us_per_delivery"] and app["server_cpu_us_per_delivery_net"]:
            row["cpu_efficiency_pct_of_bare"] = round(
                100.0 * bare["server_cpu_us_per_delivery"] / app["server_cpu_us_per_delivery_net"],
                1,
            )
        rows.append(row)
    return rows


def poll_vs_sse(fanout: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long polling's server CPU per delivered event against SSE's, per job shape (same
    subscriber count, same job, same run; net of the job's own CPU)."""
    by = {(r["phase"], r["server"], r["transport"]): r for r in fanout if r["phase"] != "scale"}
    rows = []
    for phase, server, transport in by:
        if server != "app" or transport != "poll" or (phase, "app", "sse") not in by:
            continue
        sse = by[phase, "app", "sse"]["server_cpu_us_per_delivery_net"]
        poll = by[phase, "app", "poll"]["server_cpu_us_per_delivery_net"]
        ratio = poll / sse if sse and poll else None
        rows.append(
            {
                "phase": phase,
                "sse_us": sse,
                "poll_us": poll,
                "ratio": None if ratio is None else round(ratio, 2),
                "pass": None if ratio is None else ratio <= TARGET_POLL_VS_SSE_CPU,
            }
        )
    return rows
