"""Shared fixtures: a real ``safelight serve`` process on a free port.

Tests pass settings as keyword arguments named like ``safelight.config.Settings`` fields;
they reach the server as ``SAFELIGHT_*`` environment variables, exactly as an operator
would set them.  Every interval defaults to something fast so tests take milliseconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

FAST: dict[str, Any] = {
    "step_delay_s": 0.01,
    "ping_interval_s": 1.0,
    "poll_after_ms": 50,
    "long_poll_coalesce_ms": 20,
    "stream_end_delay_ms": 10,
    "lease_s": 2.0,
    "reaper_interval_s": 0.2,
    "worker_idle_poll_s": 0.2,
    "progress_interval_s": 0.02,
    "preview_interval_s": 0.05,
    "stall_deadline_s": 3.0,
    "sse_retry_min_ms": 100,
    "sse_retry_max_ms": 200,
    "min_free_bytes": 0,
    "create_rate_per_min": 100000,
    "miss_rate_per_min": 100000,
    "dev_faults": True,
    "log_level": "warning",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedProcess:
    """A subprocess a test can kill (SIGKILL) or stop (SIGTERM, then SIGKILL)."""

    proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class LiveServer(ManagedProcess):
    """A ``safelight serve`` subprocess; ``kill()`` and ``start()`` keep port and data."""

    def __init__(self, data_dir: Path, settings: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFELIGHT_")}
        for key, value in self.settings.items():
            if isinstance(value, bool):
                value = "1" if value else "0"
            elif isinstance(value, list | tuple):
                value = ",".join(str(v) for v in value)
            env[f"SAFELIGHT_{key.upper()}"] = str(value)
        return env

    def start(self, timeout: float = 20.0) -> LiveServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "safelight",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def factory(**settings: Any) -> LiveServer:
        data_dir = tmp_path / f"data{len(servers)}"
        server = LiveServer(data_dir, {**FAST, **settings})
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL per test, as a URL (tests/pgdb.py)."""
    from tests.pgdb import PG, temp_database

    with temp_database("safelight_it") as name:
        yield f"{PG}/{name}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: a suite that silently did not run proves
    nothing (README: "fail loudly on any skipped-because-missing suite")."""
    if os.environ.get("CI", "").lower() != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        if reporter is not None:
            reporter.write_line(
                f"CI: {len(skipped)} test(s) were skipped; failing the run.", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
