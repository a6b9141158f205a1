"""``safelight generate | watch | cancel | retry`` as a user runs them: a subprocess against
a real server.  Exit codes are the contract (docs/client.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import free_port

Factory = Callable[..., Any]


def env_for(server_url: str | None, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFELIGHT_")}
    env["SAFELIGHT_CONFIG_DIR"] = str(config)
    if server_url:
        env["SAFELIGHT_SERVER"] = server_url
    return env


def safelight(
    *args: str, server: str | None, config: Path, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safelight", *args],
        env=env_for(server, config),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def start(*args: str, server: str, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "safelight", *args],
        env=env_for(server, config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_generate_saves_images_and_prints_their_paths(live_server: Factory, tmp_path: Path) -> None:
    server = live_server()
    out = tmp_path / "out"
    result = safelight(
        "generate",
        "a red kite",
        "--size",
        "96x64",
        "--steps",
        "5",
        "-n",
        "2",
        "--out",
        str(out),
        server=server.url,
        config=tmp_path / "cfg",
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 2
    assert all(p.parent == out for p in paths)
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (96, 64)
    assert "completed" in result.stderr
    # The manage token was remembered, private to the user.
    tokens = tmp_path / "cfg" / "tokens.json"
    assert (tokens.stat().st_mode & 0o777) == 0o600
    # ...while the images get the user's usual mode, not the temp file's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert all((p.stat().st_mode & 0o777) == (0o666 & ~umask) for p in paths)
    # ids may contain "-": the file is "{job_id}-{n}.png"
    assert paths[0].name.rsplit("-", 1)[0] in json.loads(tokens.read_text())[server.url]


def test_generate_json_prints_only_the_events(live_server: Factory, tmp_path: Path) -> None:
    server = live_server()
    result = safelight(
        "generate",
        "json please",
        "--size",
        "64x64",
        "--steps",
        "4",
        "--json",
        server=server.url,
        config=tmp_path / "cfg",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    events = ndjson(result.stdout)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "queued"
    assert events[-1]["type"] == "completed"
    assert {e["job_id"] for e in events} == {events[0]["job_id"]}
    assert not list(tmp_path.glob("*.png"))  # --json without --out saves nothing


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
def test_watch_by_page_url_replays_the_log(
    live_server: Factory, tmp_path: Path, transport: str
) -> None:
    server = live_server()
    created = safelight(
        "generate",
        "watch me",
        "--size",
        "64x64",
        "--steps",
        "3",
        "--detach",
        server=server.url,
        config=tmp_path / "cfg",
    )
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    result = safelight(
        "watch",
        f"{server.url}/jobs/{job_id}",
        "--json",
        "--transport",
        transport,
        server=None,
        config=tmp_path / "cfg",
    )
    assert result.returncode == 0, result.stderr
    events = ndjson(result.stdout)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "completed"


def test_failed_exits_3_and_retry_runs_the_next_attempt(
    live_server: Factory, tmp_path: Path
) -> None:
    server = live_server()
    cfg = tmp_path / "cfg"
    failed = safelight(
        "generate",
        "[[fail:provider@2]] flaky",
        "--size",
        "64x64",
        "--steps",
        "4",
        "--json",
        server=server.url,
        config=cfg,
    )
    assert failed.returncode == 3, failed.stderr
    events = ndjson(failed.stdout)
    assert events[-1]["type"] == "failed"
    assert events[-1]["data"]["error"]["retryable"] is True
    job_id = events[-1]["job_id"]
    assert f"safelight retry {job_id}" in failed.stderr

    retried = safelight("retry", job_id, "--json", server=server.url, config=cfg)
    assert retried.returncode == 0, retried.stderr
    after = ndjson(retried.stdout)
    assert after[0]["seq"] == events[-1]["seq"] + 1
    assert after[0]["type"] == "retry"
    assert [e["seq"] for e in after] == list(range(after[0]["seq"], after[-1]["seq"] + 1))
    assert after[-1]["type"] == "completed"
    assert after[-1]["attempt"] == 2


def test_cancel_from_another_process_exits_4(live_server: Factory, tmp_path: Path) -> None:
    server = live_server(step_delay_s=0.05)
    cfg = tmp_path / "cfg"
    gen = start(
        "generate",
        "cancel me",
        "--size",
        "64x64",
        "--steps",
        "150",
        "--json",
        server=server.url,
        config=cfg,
    )
    try:
        assert gen.stdout is not None
        first = json.loads(gen.stdout.readline())
        job_id = first["job_id"]
        cancelled = safelight("cancel", job_id, server=server.url, config=cfg)
        assert cancelled.returncode == 0, cancelled.stderr
        rest, err = gen.communicate(timeout=30)
    finally:
        gen.kill()
    assert gen.returncode == 4, err
    assert ndjson(rest)[-1]["type"] == "cancelled"


def test_refusals_exit_6(live_server: Factory, tmp_path: Path) -> None:
    server = live_server()
    cfg = tmp_path / "cfg"
    unknown = safelight("cancel", "noSuchJob000000000000000", server=server.url, config=cfg)
    assert unknown.returncode == 6
    assert "not" in unknown.stderr.lower()
    created = safelight(
        "generate",
        "mine",
        "--size",
        "64x64",
        "--steps",
        "2",
        "--detach",
        server=server.url,
        config=cfg,
    )
    job_id = created.stdout.strip()
    wrong = safelight("cancel", job_id, "--token", "wrong", server=server.url, config=cfg)
    assert wrong.returncode == 6
    assert "forbidden" in wrong.stderr.lower()
    other_machine = safelight("cancel", job_id, server=server.url, config=tmp_path / "other")
    assert other_machine.returncode == 6
    assert "--token" in other_machine.stderr


def test_usage_errors_exit_2(live_server: Factory, tmp_path: Path) -> None:
    server = live_server()
    missing = safelight("generate", server=server.url, config=tmp_path)
    assert missing.returncode == 2
    invalid = safelight("generate", "x", "--steps", "0", server=server.url, config=tmp_path)
    assert invalid.returncode == 2
    assert "steps" in invalid.stderr


def test_server_down_exits_5(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    result = safelight("generate", "nobody home", server=down, config=tmp_path)
    assert result.returncode == 5
    assert "cannot reach" in result.stderr
    watch = safelight("watch", f"{down}/jobs/abc", server=None, config=tmp_path)
    assert watch.returncode == 5


def test_ctrl_c_without_a_terminal_detaches_and_the_job_goes_on(
    live_server: Factory, tmp_path: Path
) -> None:
    server = live_server(step_delay_s=0.02)
    gen = start(
        "generate",
        "keep going",
        "--size",
        "64x64",
        "--steps",
        "100",
        "--json",
        server=server.url,
        config=tmp_path / "cfg",
    )
    try:
        assert gen.stdout is not None
        job_id = json.loads(gen.stdout.readline())["job_id"]
        time.sleep(0.2)
        gen.send_signal(signal.SIGINT)
        _, err = gen.communicate(timeout=30)
    finally:
        gen.kill()
    assert gen.returncode == 130, err
    assert "detached" in err
    status = httpx.get(f"{server.url}/api/jobs/{job_id}").json()["status"]
    assert status in ("queued", "running", "uploading", "completed")


def test_forced_transport_that_is_disabled_exits_5(live_server: Factory, tmp_path: Path) -> None:
    server = live_server(transports="ws,poll")
    result = safelight(
        "generate",
        "sse only",
        "--size",
        "64x64",
        "--steps",
        "2",
        "--transport",
        "sse",
        server=server.url,
        config=tmp_path,
    )
    assert result.returncode == 5
    assert "--transport" in result.stderr
