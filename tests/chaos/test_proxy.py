"""R16: a reverse proxy in front - Debian's nginx running deploy/nginx/safelight.conf, the
config docs/deploy.md shows and scripts/cluster runs (rendered by the same function).

- The first SSE event arrives while the job is still running, both with the shipped
  config and with the SSE location left at nginx's default buffering (the nodes also
  send ``X-Accel-Buffering: no``; nginx 1.22 was seen to pass frames on as they come
  even when told to ignore that header, so both figures are recorded).
- A WebSocket upgrades through the proxy and delivers every event.
- A stream quieter than ``proxy_read_timeout`` survives on keep-alive pings; with pings
  slower than the timeout the same stream is cut (the control that shows the pings are
  what hold it).

nginx missing is a failure, never a skip: the suite has to prove this on every run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.conftest import LiveServer, free_port
from tests.integration.helpers import TERMINAL, assert_exactly_once, create, get

REPO = Path(__file__).resolve().parents[2]
READ_TIMEOUT_S = 2.0


def load_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("safelight_cluster", REPO / "scripts/cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cluster = load_cluster()


@dataclass
class Proxy:
    url: str
    proc: subprocess.Popen[bytes]
    run: Path


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    assert cluster.nginx_binary() is not None, (
        "nginx is not installed: scripts/install --all installs Debian's nginx"
    )
    started: list[Proxy] = []

    def start(server: LiveServer, *, default_buffering: bool = False) -> Proxy:
        port = free_port()
        run = tmp_path / f"nginx-{port}"
        main = cluster.render_nginx(
            run,
            f"127.0.0.1:{port}",
            [f"127.0.0.1:{server.port}"],
            f"{READ_TIMEOUT_S:g}s",
            default_buffering=default_buffering,
        )
        cmd = cluster.nginx_command(main)
        check = subprocess.run([*cmd, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        with (run / "stdout.log").open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        proxy = Proxy(f"http://127.0.0.1:{port}", proc, run)
        started.append(proxy)
        cluster.wait_http(f"{proxy.url}/readyz", proc, run / "error.log")
        return proxy

    yield start
    for proxy in started:
        proxy.proc.terminate()
        proxy.proc.wait(10)


@dataclass
class Read:
    events: list[dict[str, Any]] = field(default_factory=list)
    pings: int = 0
    first_frame_s: float | None = None
    at_first: Any = None  # what ``on_first`` returned when the first frame arrived
    longest_quiet_s: float = 0.0  # longest gap between two events (pings not counted)
    ended_cleanly: bool = False


def read_sse_timed(
    url: str, job_id: str, timeout: float = 10.0, on_first: Callable[[], Any] | None = None
) -> Read:
    """Read an SSE stream by hand (lines), timing the first frame and the gaps."""
    out = Read()
    started = last_event = time.monotonic()
    kind = ""
    with (
        httpx.Client(timeout=httpx.Timeout(timeout, connect=5)) as client,
        client.stream("GET", f"{url}/api/jobs/{job_id}/stream?after=0") as r,
    ):
        assert r.status_code == 200, r.read()
        try:
            for line in r.iter_lines():
                if not line:
                    kind = ""  # a blank line ends the frame
                if line.startswith("event:"):
                    kind = line[6:].strip()
                if not line.startswith("data:"):
                    continue
                now = time.monotonic()
                if out.first_frame_s is None:
                    out.first_frame_s = now - started
                    out.at_first = on_first() if on_first else None
                if kind == "ping":
                    out.pings += 1
                elif kind != "welcome":
                    out.longest_quiet_s = max(out.longest_quiet_s, now - last_event)
                    last_event = now
                    out.events.append(json.loads(line[5:]))
        except httpx.HTTPError:
            return out  # cut by the proxy
    out.ended_cleanly = bool(out.events) and out.events[-1]["type"] in TERMINAL
    return out


def read_ws_timed(url: str, job_id: str, timeout: float = 10.0) -> Read:
    out = Read()
    last_event = time.monotonic()
    ws_url = url.replace("http://", "ws://") + f"/api/jobs/{job_id}/ws?after=0"
    with ws_connect(ws_url, open_timeout=5) as ws:
        json.loads(ws.recv(timeout=timeout))  # welcome
        while True:
            try:
                frame = json.loads(ws.recv(timeout=timeout))
            except Exception:  # ConnectionClosed (by the server or by the proxy)
                out.ended_cleanly = ws.close_code == 1000
                return out
            if frame.get("type") == "ping":
                out.pings += 1
                continue
            now = time.monotonic()
            out.longest_quiet_s = max(out.longest_quiet_s, now - last_event)
            last_event = now
            out.events.append(frame)


def test_r16_first_sse_event_and_websocket_through_nginx(
    live_server: Callable[..., LiveServer], nginx: Callable[..., Proxy], scenario: Any
) -> None:
    run = scenario("R16", "nginx in front (default buffering): SSE live, WS upgrades, idle kept")
    server = live_server(step_delay_s=0.1, ping_interval_s=0.5, progress_interval_s=0.2)
    shipped = nginx(server)
    buffered = nginx(server, default_buffering=True)
    firsts: dict[str, list[float]] = {"shipped": [], "default_buffering": []}
    for _ in run.trials():
        for label, proxy in (("shipped", shipped), ("default_buffering", buffered)):
            job = create(proxy.url, steps=32)

            def step_now(job_id: str = job["id"]) -> int:
                progress = get(server.url, job_id)["progress"]
                return int(progress["step"]) if progress else 0

            got = read_sse_timed(proxy.url, job["id"], on_first=step_now)
            assert got.first_frame_s is not None
            firsts[label].append(got.first_frame_s)
            # Live, not held in a proxy buffer: the first frame reached the client while
            # the job (asked directly, behind the proxy) was still in its first quarter.
            assert got.at_first is not None and got.at_first < 8, got.at_first
            assert got.ended_cleanly, got
            assert_exactly_once(got.events)
            ws = read_ws_timed(proxy.url, create(proxy.url, steps=5)["id"])
            assert ws.ended_cleanly
            assert_exactly_once(ws.events)
            run.count(lost=0, duplicated=0, stuck=0)
    for label, values in firsts.items():
        run.figure(f"first_sse_frame_ms_{label}", round(1000 * max(values), 1))


def test_r16_an_idle_stream_outlives_proxy_read_timeout_on_pings(
    live_server: Callable[..., LiveServer], nginx: Callable[..., Proxy], scenario: Any
) -> None:
    run = scenario("R16", "idle stream past proxy_read_timeout (2 s) held by pings")
    # Steps 2.5 s apart: the stream carries no event for longer than the proxy's timeout.
    quiet = {"step_delay_s": 2.5, "stall_deadline_s": 30.0, "concurrency": 2}
    pinging = live_server(**quiet, ping_interval_s=0.5)
    proxy = nginx(pinging, default_buffering=True)
    for _ in run.trials():
        sse_job, ws_job = create(proxy.url, steps=2), create(proxy.url, steps=2)
        with ThreadPoolExecutor(2) as pool:
            sse_read = pool.submit(read_sse_timed, proxy.url, sse_job["id"])
            ws_read = pool.submit(read_ws_timed, proxy.url, ws_job["id"])
            sse, ws = sse_read.result(), ws_read.result()
        for got in (sse, ws):
            assert got.longest_quiet_s > READ_TIMEOUT_S, "the scenario needs a quiet stream"
            assert got.pings >= 2
            assert got.ended_cleanly, got
            assert_exactly_once(got.events)
            assert got.events[-1]["type"] == "completed"
        run.figure("longest_quiet_s", round(max(sse.longest_quiet_s, ws.longest_quiet_s), 2))
        run.count(lost=0, duplicated=0, stuck=0)


def test_r16_control_without_pings_the_proxy_cuts_the_stream(
    live_server: Callable[..., LiveServer], nginx: Callable[..., Proxy]
) -> None:
    """Pings slower than proxy_read_timeout: nginx drops the quiet stream, so the test
    above measures the keep-alives and not a lenient proxy."""
    silent = live_server(
        step_delay_s=2.5,
        stall_deadline_s=30.0,
        concurrency=2,
        ping_interval_s=30.0,
        ws_ping_interval_s=60.0,
    )
    proxy = nginx(silent)
    job, ws_job = create(proxy.url, steps=2), create(proxy.url, steps=2)
    with ThreadPoolExecutor(2) as pool:
        sse_read = pool.submit(read_sse_timed, proxy.url, job["id"])
        ws_read = pool.submit(read_ws_timed, proxy.url, ws_job["id"])
        sse, ws = sse_read.result(), ws_read.result()
    assert not sse.ended_cleanly
    assert not any(e["type"] in TERMINAL for e in sse.events)
    assert not ws.ended_cleanly
    # The jobs themselves were fine: only the proxied streams were cut.
    assert get(silent.url, job["id"])["status"] in {"running", "completed"}


def test_docs_deploy_shows_the_config_under_test() -> None:
    """docs/deploy.md quotes deploy/nginx/safelight.conf verbatim: what operators copy is
    what scripts/cluster runs and what this file streams through."""
    conf = (REPO / "deploy" / "nginx" / "safelight.conf").read_text()
    doc = (REPO / "docs" / "deploy.md").read_text()
    assert f"```nginx\n{conf}```" in doc
    for unit in ("safelight-api@.service", "safelight-worker@.service"):
        text = (REPO / "deploy" / "systemd" / unit).read_text()
        assert f"```ini\n{text}```" in doc, unit
