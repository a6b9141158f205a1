"""Processes and what the bench reads about them: servers on free ports, client process
groups, CPU and memory from /proc, py-spy, and the machine the run was on."""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from benchmarks.clients import WorkerSpec, raise_nofile, worker_main
from benchmarks.config import ROOT, Config

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
