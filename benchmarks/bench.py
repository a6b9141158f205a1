"""``scripts/bench``: the numbers behind DESIGN.md "What fast means here", in one run.

1. Fan-out: N subscribers (default 1,000) follow ONE running job on ONE ``safelight serve``
   process (embedded mode, builtin provider), over WebSocket and over SSE separately.
   Latency = client receive wall time - the event's ``ts`` (written at commit); only live
   events count (``ts`` after that subscriber's welcome).  Every subscriber's ``seq`` must
   go after+1, after+2, ... to the terminal event; any violation is reported.
   Subscribers connect while a "gate" job holds the single worker slot (``--concurrency
   1``); the measured job waits queued behind it, and the gate is cancelled once everyone
   has its welcome.  Two shapes of job: ``steady`` (150 steps, one every 30 ms: about
   35 events/s, 35,000 deliveries/s at 1,000 subscribers, more than one process can
   deliver) and ``paced`` (5 steps/s, the production pace: below saturation).
2. The ceiling: a bare uvicorn broadcast server (``benchmarks.bare_server``, same uvicorn
   options) sends the same number of similar-sized messages at the job's configured pace
   to the same number of subscribers, measured by the same client harness.
3. Memory per idle stream: server VmRSS before and after opening K idle streams to a
   queued job on a ``--concurrency 0`` server (and, for reference, on the bare server).

Results: a rich table on stdout and JSON in ``bench-results/latest.json``.
See docs/benchmarks.md for how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.clients import WorkerSpec, raise_nofile, worker_main

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "safelight-bench/1"
GATE_STEPS = 150  # the API's maximum
PREVIEW_INTERVAL_S = 1.0  # Settings.preview_interval_s default (left as is)
TARGET_P99_MS = 50.0
TARGET_PCT_OF_BARE = 50.0
TARGET_IDLE_KB = {"ws": 30.0, "sse": 15.0}
TARGETS: dict[str, Any] = {
    "p99_ms": TARGET_P99_MS,
    "throughput_pct_of_bare": TARGET_PCT_OF_BARE,
    "idle_kb_per_stream": TARGET_IDLE_KB,
}
# Wide enough for the tables when stdout is a file or a pipe (CI logs).
console = Console(width=None if sys.stdout.isatty() else 170)


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    subscribers: int = 1000
    steps: int = 150
    step_delay_s: float = 0.03
    progress_interval_s: float = 0.02
    paced_rate: float = 5.0  # events/s of the paced phase (0 = skip it)
    paced_s: float = 5.0
    size: int = 64
    transports: tuple[str, ...] = ("ws", "sse")
    bare: bool = True
    idle: int = 1000
    idle_transports: tuple[str, ...] = ("ws", "sse")
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
    p.add_argument("--transports", default=",".join(d.transports), help="fan-out: ws,sse")
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
    a = p.parse_args(argv)
    cfg = Config(
        subscribers=a.subscribers,
        steps=a.steps,
        step_delay_s=a.step_delay if a.duration is None else a.duration / a.steps,
        progress_interval_s=a.progress_interval,
        paced_rate=a.paced_rate,
        paced_s=a.paced_s,
        size=a.size,
        transports=_split(a.transports, {"ws", "sse"}),
        bare=not a.no_bare,
        idle=a.idle,
        idle_transports=_split(a.idle_transports, {"ws", "sse"}),
        client_procs=a.client_procs,
        gate_s=a.gate_s,
        connect_concurrency=a.connect_concurrency,
        profile=a.profile,
        output=a.output,
        data_root=a.data_root,
        keep=a.keep,
        quick=a.quick,
        server_src=a.server_src.resolve() if a.server_src else None,
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


# -- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _preexec() -> None:
    raise_nofile()


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def system_cpu() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    idle = fields[3] + fields[4]
    return total - idle, fields[7], total


class Window:
    """CPU accounting between ``start()`` and ``stop()``: the server process and the machine."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0 = self.t0 = 0.0
        self.sys0 = (0, 0, 0)
        self.result: dict[str, Any] = {}

    def start(self) -> None:
        self.cpu0, self.t0, self.sys0 = proc_cpu_s(self.pid), time.time(), system_cpu()

    def stop(self) -> None:
        cpu = proc_cpu_s(self.pid) - self.cpu0
        wall = time.time() - self.t0
        busy, steal, total = (a - b for a, b in zip(system_cpu(), self.sys0, strict=True))
        self.result = {
            "server_cpu_s": round(cpu, 2),
            "server_cpu_pct": round(100 * cpu / wall, 1) if wall > 0 else None,
            "machine_busy_pct": round(100 * busy / total, 1) if total else None,
            "machine_steal_pct": round(100 * steal / total, 1) if total else None,
            "measured_wall_s": round(wall, 2),
        }

    def per_delivery(self, deliveries: int, job_cpu_s: float = 0.0) -> dict[str, Any]:
        """Server CPU per delivery; ``net`` first subtracts what the same job costs with
        no subscribers (generator, commits, previews), which the bare server never pays."""
        cpu = self.result["server_cpu_s"]
        net = max(0.0, cpu - job_cpu_s)
        return {
            **self.result,
            "server_cpu_us_per_delivery": round(1e6 * cpu / deliveries, 1) if deliveries else None,
            "server_cpu_us_per_delivery_net": round(1e6 * net / deliveries, 1)
            if deliveries
            else None,
        }


class Server:
    """A server subprocess (``safelight serve`` or the bare broadcaster) on a free port."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(self.port)],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_preexec,  # only setrlimit
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str, timeout: float = 90.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=0.5, trust_env=False).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def safelight_env(settings: dict[str, Any], src: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFELIGHT_")}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    for key, value in settings.items():
        env[f"SAFELIGHT_{key.upper()}"] = str(value)
    return env


def start_safelight(
    name: str,
    data_dir: Path,
    log: Path,
    concurrency: int,
    settings: dict[str, Any],
    src: Path | None = None,
) -> Server:
    cmd = [sys.executable, "-m", "safelight", "serve", "--host", "127.0.0.1"]
    cmd += ["--data-dir", str(data_dir), "--concurrency", str(concurrency)]
    return Server(name, cmd, safelight_env(settings, src), log).wait_ready("/readyz")


def safelight_module(src: Path | None) -> str:
    """Where the servers import safelight from (checks --server-src took effect)."""
    out = subprocess.run(
        [sys.executable, "-c", "import safelight; print(safelight.__file__)"],
        env=safelight_env({}, src),
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or out.stderr.strip()[-200:]


def start_bare(name: str, log: Path) -> Server:
    cmd = [sys.executable, "-m", "benchmarks.bare_server", "--host", "127.0.0.1"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return Server(name, cmd, env, log).wait_ready("/healthz")


class ClientGroup:
    """``procs`` client processes sharing ``spec.count`` subscribers."""

    def __init__(self, spec: WorkerSpec, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        procs = max(1, min(procs, spec.count))
        share = [spec.count // procs + (1 if i < spec.count % procs else 0) for i in range(procs)]
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for count in share:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, replace(spec, count=count)))
            proc.daemon = True
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def wait_for(self, event: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        out: list[dict[str, Any]] = []
        for conn in self.conns:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not conn.poll(remaining):
                    raise TimeoutError(f"clients: no {event!r} within {timeout:g} s")
                try:
                    message: dict[str, Any] = conn.recv()
                except EOFError:
                    raise RuntimeError(
                        f"a client process died while waiting for {event!r}"
                    ) from None
                if message.get("event") == "error":
                    raise RuntimeError(f"client process failed: {message.get('error')}")
                if message.get("event") == event:
                    out.append(message)
                    break
        return out

    def send(self, message: str) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(message)

    def close(self) -> None:
        self.send("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self.conns:
            conn.close()


@contextlib.contextmanager
def clients(spec: WorkerSpec, procs: int) -> Iterator[ClientGroup]:
    group = ClientGroup(spec, procs)
    try:
        yield group
    finally:
        group.close()


class Profiler:
    """py-spy on a server for the measured window (``--profile``)."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            return
        self.proc = subprocess.Popen(
            [
                exe,
                *("record", "--pid", str(pid), "--duration", str(max(1, math.ceil(seconds)))),
                *("--rate", "200", "--format", "raw", "--nolineno", "--nonblocking", "--gil"),
                "--threads",
                *("--output", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def result(self, top: int = 15) -> dict[str, Any] | None:
        if self.proc is None:
            return {"error": "py-spy not installed (pip install py-spy)"}
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if not self.out.exists():
            return {"error": "py-spy produced no output (ptrace not permitted?)"}
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
        if not total:
            return {"error": "no samples"}

        # Inclusive time without the frames every event-loop sample has (runpy, uvicorn's
        # Server.run, the loop, Handle._run): what is left says where the loop's time goes.
        root = max(inclusive.values())
        for frame, n in list(inclusive.items()):
            if n >= 0.9 * root or frame.startswith(("Handle._run ", "BaseEventLoop.")):
                del inclusive[frame]

        def pct(counter: Counter[str]) -> list[dict[str, Any]]:
            return [
                {"frame": frame, "pct": round(100.0 * n / total, 1)}
                for frame, n in counter.most_common(top)
            ]

        return {
            "samples": total,
            "file": str(self.out),
            "self": pct(own),
            "inclusive": pct(inclusive),
        }


# -- statistics -------------------------------------------------------------------------


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


# -- the runs ---------------------------------------------------------------------------


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

    def gates_needed(self, phase: Phase) -> int:
        c = self.cfg
        # Connecting 1,000 subscribers takes 2-3 s here; cover about 10 ms each, at least
        # 8 s.  Each unused gate is cancelled while still queued, which appends one
        # `position` event to the measured job: a few, not dozens.  If connecting takes
        # longer, the run says so in its notes (raise --gate-s).
        cover = c.gate_s if c.gate_s is not None else max(8.0, c.subscribers * 0.01)
        return max(1, math.ceil(cover / (GATE_STEPS * phase.step_delay_s)))

    # 1. full app fan-out
    def fanout_app(self, transport: str, phase: Phase) -> dict[str, Any]:
        c = self.cfg
        label = f"{phase.name} app/{transport}"
        console.print(
            f"[bold]fan-out[/] {label}: {c.subscribers} subscribers, {phase.steps} steps "
            f"every {phase.step_delay_s * 1000:.0f} ms ..."
        )
        name = f"{phase.name}-app-{transport}"
        server = start_safelight(
            name,
            self.root / name,
            self.logs / f"{name}.log",
            1,
            self.app_settings(phase),
            c.server_src,
        )
        try:
            with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:

                def create(steps: int) -> dict[str, Any]:
                    body = {
                        "prompt": "benchmark: a lighthouse at dusk",
                        "steps": steps or phase.steps,
                        "width": c.size,
                        "height": c.size,
                    }
                    r = http.post("/api/jobs", json=body)
                    r.raise_for_status()
                    job: dict[str, Any] = r.json()
                    return job

                gates = [create(GATE_STEPS) for _ in range(self.gates_needed(phase))]
                time.sleep(0.01)  # the queue orders by enqueue time (ms), then id
                job = create(phase.steps)
                after = int(job["last_seq"])
                scheme = "ws" if transport == "ws" else "http"
                path = "ws" if transport == "ws" else "stream"
                url = (
                    f"{scheme}://127.0.0.1:{server.port}/api/jobs/{job['id']}/{path}?after={after}"
                )
                spec = WorkerSpec(
                    transport, url, after, c.subscribers, "stream", c.connect_concurrency
                )
                with clients(spec, c.client_procs) as group:
                    connected = group.wait_for("connected", 300)
                    status = http.get(f"/api/jobs/{job['id']}").json()["status"]
                    if status != "queued":
                        self.note(
                            f"{label}: the measured job was already {status} when all "
                            "subscribers were connected (raise --gate-s); early events are "
                            "excluded from latency as backlog"
                        )
                    rss_connected = proc_rss_kb(server.pid)
                    window = Window(server.pid)
                    window.start()
                    group.send("mark")
                    nominal = phase.duration_s
                    profiler = (
                        Profiler(server.pid, nominal + 1, self.logs / f"py-spy-{name}.txt")
                        if c.profile
                        else None
                    )
                    for gate in reversed(gates):  # queued ones first, the running one last
                        r = http.post(
                            f"/api/jobs/{gate['id']}/cancel",
                            headers={"Authorization": f"Bearer {gate['manage_token']}"},
                        )
                        if r.status_code not in (200, 202, 409):
                            r.raise_for_status()
                    finished = group.wait_for("finished", nominal * 4 + 120)
                    window.stop()
                    results = group.wait_for("result", 300)
                final = http.get(f"/api/jobs/{job['id']}").json()
                alone = self.job_alone(http, server.pid, create)
        finally:
            server.stop()
        summary = summarise(results, connected)
        self._check_final(summary, label, int(final["last_seq"]), final["status"])
        if any(f.get("timed_out") for f in finished):
            self.note(f"{label}: some streams had not ended when the run timed out")
        out = {
            "phase": phase.name,
            "server": "app",
            "transport": transport,
            **self.phase_info(phase),
            **summary,
            "job": {
                "id": final["id"],
                "status": final["status"],
                "last_seq": final["last_seq"],
                "after": after,
                "steps": phase.steps,
            },
            **window.per_delivery(summary["live_deliveries"], alone["cpu_s"]),
            "job_alone": alone,
            "server_rss_kb_connected": rss_connected,
            "gates": len(gates),
            "client_procs": min(c.client_procs, c.subscribers),
        }
        if profiler is not None:
            out["profile"] = profiler.result()
        self.app_shape[phase.name, transport] = summary["frame_bytes_mean"] or 200.0
        return out

    def phase_info(self, phase: Phase) -> dict[str, Any]:
        return {
            "steps": phase.steps,
            "step_delay_s": round(phase.step_delay_s, 4),
            "progress_interval_s": phase.progress_interval_s,
            "nominal_events": phase.nominal_events,
            "nominal_rate_per_s": round(phase.nominal_rate, 2),
            "nominal_deliveries_per_s": round(phase.nominal_rate * self.cfg.subscribers, 1),
        }

    @staticmethod
    def job_alone(http: httpx.Client, pid: int, create: Any) -> dict[str, Any]:
        """The server CPU of the same job with nobody watching (its own cost)."""
        cpu0, t0 = proc_cpu_s(pid), time.time()
        job = create(0)
        while job["status"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.1)
            job = http.get(f"/api/jobs/{job['id']}").json()
        cpu = proc_cpu_s(pid) - cpu0
        return {
            "cpu_s": round(cpu, 3),
            "wall_s": round(time.time() - t0, 2),
            "events": job["last_seq"],
            "status": job["status"],
        }

    def _check_final(self, summary: dict[str, Any], label: str, last_seq: int, status: str) -> None:
        wrong = {s: n for s, n in summary["final_seqs"].items() if int(s) != last_seq}
        if wrong:
            summary["violations"]["by_kind"]["final_seq_mismatch"] = sum(wrong.values())
            summary["violations"]["total"] += sum(wrong.values())
            summary["violations"]["examples"].append(
                f"{label}: final seqs {wrong} != job last_seq {last_seq}"
            )
        if summary["connected"] < summary["subscribers"]:
            self.note(f"{label}: only {summary['connected']}/{summary['subscribers']} connected")
        if status != "completed":
            self.note(f"{label}: the measured job ended {status}, not completed")

    # 2. bare uvicorn fan-out
    def fanout_bare(self, transport: str, phase: Phase) -> dict[str, Any]:
        c = self.cfg
        # The pace the measured job is configured for (not what the app managed under
        # load: it coalesces progress when its loop is late), in messages of the size the
        # app sent.
        count = phase.nominal_events
        size = self.app_shape.get((phase.name, transport), 200.0)
        interval = phase.duration_s / count
        label = f"{phase.name} bare/{transport}"
        console.print(
            f"[bold]fan-out[/] {label}: {c.subscribers} subscribers, {count} messages "
            f"of ~{size:.0f} B every {interval * 1000:.0f} ms ..."
        )
        name = f"{phase.name}-bare-{transport}"
        server = start_bare(name, self.logs / f"{name}.log")
        try:
            url = f"{'ws' if transport == 'ws' else 'http'}://127.0.0.1:{server.port}/{transport}"
            spec = WorkerSpec(transport, url, 0, c.subscribers, "stream", c.connect_concurrency)
            with clients(spec, c.client_procs) as group:
                connected = group.wait_for("connected", 300)
                window = Window(server.pid)
                window.start()
                group.send("mark")
                nominal = count * interval
                profiler = (
                    Profiler(server.pid, nominal + 1, self.logs / f"py-spy-{name}.txt")
                    if c.profile
                    else None
                )
                r = httpx.post(
                    f"{server.url}/start",
                    params={
                        "transport": transport,
                        "count": count,
                        "interval": interval,
                        "size": round(size),
                    },
                    trust_env=False,
                )
                r.raise_for_status()
                finished = group.wait_for("finished", nominal * 4 + 120)
                window.stop()
                results = group.wait_for("result", 300)
        finally:
            server.stop()
        summary = summarise(results, connected)
        self._check_final(summary, label, count, "completed")
        if any(f.get("timed_out") for f in finished):
            self.note(f"{label}: some streams had not ended when the run timed out")
        out = {
            "phase": phase.name,
            "server": "bare",
            "transport": transport,
            **self.phase_info(phase),
            **summary,
            "messages": count,
            "interval_s": interval,
            **window.per_delivery(summary["live_deliveries"]),
            "client_procs": min(c.client_procs, c.subscribers),
        }
        if profiler is not None:
            out["profile"] = profiler.result()
        return out

    # 3. memory per idle stream
    def idle_memory(self, server_kind: str, transport: str) -> dict[str, Any]:
        c = self.cfg
        k = c.idle
        console.print(f"[bold]idle memory[/] {server_kind}/{transport}: {k} streams ...")
        log = self.logs / f"idle-{server_kind}-{transport}.log"
        if server_kind == "app":
            server = start_safelight(
                f"idle-app-{transport}",
                self.root / f"idle-{transport}",
                log,
                0,
                self.app_settings(),
                c.server_src,
            )
        else:
            server = start_bare(f"idle-bare-{transport}", log)
        try:
            if server_kind == "app":
                r = httpx.post(
                    f"{server.url}/api/jobs",
                    json={"prompt": "idle", "steps": 10, "width": 64, "height": 64},
                    trust_env=False,
                )
                r.raise_for_status()
                job = r.json()
                after = int(job["last_seq"])
                path = f"/api/jobs/{job['id']}/{'ws' if transport == 'ws' else 'stream'}"
                path += f"?after={after}"
            else:
                after, path = 0, f"/{transport}"
            url = f"{'ws' if transport == 'ws' else 'http'}://127.0.0.1:{server.port}{path}"
            spec = WorkerSpec(transport, url, after, k, "idle", c.connect_concurrency)
            # Warm-up: first use of every code path (lazy imports, caches) is not per-stream.
            with clients(replace(spec, count=min(20, k)), 1) as warm:
                warm.wait_for("connected", 120)
                warm.send("stop")
                warm.wait_for("closed", 60)
            time.sleep(1.0)
            before = proc_rss_kb(server.pid)
            with clients(spec, c.idle_client_procs) as group:
                connected = group.wait_for("connected", 300)
                time.sleep(1.5)
                after_kb = proc_rss_kb(server.pid)
                group.send("stop")
                group.wait_for("closed", 120)
            time.sleep(1.0)
            closed_kb = proc_rss_kb(server.pid)
        finally:
            server.stop()
        ok = sum(x["ok"] for x in connected)
        if ok < k:
            self.note(f"idle {server_kind}/{transport}: only {ok}/{k} streams opened")
        per = (after_kb - before) / ok if ok else None
        target = TARGET_IDLE_KB[transport]
        return {
            "server": server_kind,
            "transport": transport,
            "streams": ok,
            "requested": k,
            "rss_before_kb": before,
            "rss_open_kb": after_kb,
            "rss_after_close_kb": closed_kb,
            "kb_per_stream": _round(per),
            "target_kb": target if server_kind == "app" else None,
            "pass": (per is not None and per <= target) if server_kind == "app" else None,
            "errors": {e: n for x in connected for e, n in x["errors"].items()},
        }


def environment(cfg: Config, data_root: Path) -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    names = ["safelight", "uvicorn", "wsproto", "websockets", "starlette", "fastapi"]
    names += ["sse-starlette", "httpx", "httpx-sse", "uvloop", "httptools"]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {n: version(n) for n in names},
        "uvicorn_http": "httptools" if version("httptools") else "h11",
        "uvicorn_loop": "uvloop" if version("uvloop") else "asyncio",
        "rlimit_nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "data_fs": _fs_type(data_root),
        "safelight_module": safelight_module(cfg.server_src),
        **(git_info() if cfg.server_src is None else {"server_src": str(cfg.server_src)}),
    }


def git_info() -> dict[str, Any]:
    """The commit benchmarked and whether src/ had uncommitted changes (read-only git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--", "src")
    return {
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_src_dirty": None if status is None else bool(status),
    }


def _fs_type(path: Path) -> str | None:
    best, fs = "", None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fs = parts[1], parts[2]
    return fs


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def compare(fanout: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """App against bare per phase and transport.  The throughput target is judged on the
    steady phase only (both servers pushed past what they can deliver); in the paced
    phase the ratio only says whether the app kept up."""
    rows = []
    by = {(r["phase"], r["server"], r["transport"]): r for r in fanout}
    for phase, server, transport in by:
        if server != "app":
            continue
        app = by[phase, "app", transport]
        bare = by.get((phase, "bare", transport))
        p99 = app["latency_ms"]["p99"]
        row: dict[str, Any] = {
            "phase": phase,
            "transport": transport,
            "nominal_deliveries_per_s": app["nominal_deliveries_per_s"],
            "app_throughput_per_s": app["throughput_per_s"],
            "bare_throughput_per_s": bare["throughput_per_s"] if bare else None,
            "throughput_pct_of_bare": None,
            "cpu_efficiency_pct_of_bare": None,
            "app_p99_ms": p99,
            "bare_p99_ms": bare["latency_ms"]["p99"] if bare else None,
            "p99_pass": p99 is not None and p99 <= TARGET_P99_MS,
            "throughput_pass": None,
            "order_violations": app["violations"]["total"],
        }
        if bare and bare["throughput_per_s"] and app["throughput_per_s"]:
            pct = 100.0 * app["throughput_per_s"] / bare["throughput_per_s"]
            row["throughput_pct_of_bare"] = round(pct, 1)
            row["throughput_pass"] = pct >= TARGET_PCT_OF_BARE if phase == "steady" else None
        if bare and bare["server_cpu_us_per_delivery"] and app["server_cpu_us_per_delivery_net"]:
            row["cpu_efficiency_pct_of_bare"] = round(
                100.0 * bare["server_cpu_us_per_delivery"] / app["server_cpu_us_per_delivery_net"],
                1,
            )
        rows.append(row)
    return rows


# -- report -----------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "[green]pass[/]" if value else "[red]MISS[/]"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


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
        t = Table(title="Targets (DESIGN.md): p99 <= 50 ms; throughput >= 50 % of bare")
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


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    raise_nofile()
    started = time.time()
    load_before = uptime()
    bench = Bench(cfg)
    fanout: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    console.print(f"[bold]scripts/bench[/] {load_before}")
    try:
        for phase in cfg.phases():
            for transport in cfg.transports:
                fanout.append(bench.fanout_app(transport, phase))
                if cfg.bare:
                    fanout.append(bench.fanout_bare(transport, phase))
        if cfg.idle > 0:
            for transport in cfg.idle_transports:
                idle.append(bench.idle_memory("app", transport))
                if cfg.bare:
                    idle.append(bench.idle_memory("bare", transport))
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
        "idle_memory": idle,
        "notes": bench.notes,
        "rerun": " ".join(["scripts/bench", *(argv if argv is not None else sys.argv[1:])]),
    }
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    console.print(f"\nJSON: {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
