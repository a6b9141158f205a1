"""The newcomer tier (issue 10): what a person without our dev venv gets.

- the built wheel and sdist are a real distribution (static UI, ``py.typed``, clean
  ``twine check``);
- the wheel in a brand-new venv with no extras imports nothing optional, serves a job from
  create to a downloaded PNG over WebSocket, and serves both pages with their assets;
- choosing PostgreSQL or diffusers there says which extra to install, in one line, exit 2;
- ``scripts/serve`` from a clean clone of HEAD sets itself up and answers ``/healthz``.

These install from the package index (as a newcomer would), so they take a minute or two;
they run in CI through the README's test command.  Only committed files reach the clone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image
from websockets.sync.client import connect as ws_connect

from tests.conftest import free_port

pytestmark = [pytest.mark.newcomer, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ("psycopg", "torch", "diffusers", "transformers")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of someone who has never seen our venv: no PYTHONPATH (helpers and
    editable installs would leak our source in), no VIRTUAL_ENV, no SAFELIGHT_*."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SAFELIGHT_", "PYTHON", "VIRTUAL_ENV", "CONDA"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(extra)
    return env


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        cmd, capture_output=True, text=True, check=False, **kwargs
    )


def base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)]
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    made = run([base_python(), "-m", "venv", str(venv)], env=clean_env())
    assert made.returncode == 0, made.stderr
    wheel = next(dist.glob("safelight-*.whl"))
    pip = run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return venv


def test_wheel_and_sdist_are_a_real_distribution(dist: Path) -> None:
    wheel = next(dist.glob("safelight-*.whl"))
    sdist = next(dist.glob("safelight-*.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "safelight/py.typed",
        "safelight/web/static/index.html",
        "safelight/web/static/job.html",
        "safelight/web/static/docs.html",
        "safelight/web/static/css/app.css",
        "safelight/web/static/js/connection.js",
        "safelight/web/static/js/transports/ws.js",
    ):
        assert needed in names, f"{needed} is not in the wheel"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text
    check = run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)])
    assert check.returncode == 0, check.stdout + check.stderr


def test_base_install_imports_nothing_optional(fresh_venv: Path) -> None:
    probe = (
        "import json, sys, safelight.cli, safelight.api.app, safelight.runtime; "
        "from safelight.config import Settings; from safelight.runtime import Runtime; "
        f"print(json.dumps([m for m in {OPTIONAL!r} if m in sys.modules]))"
    )
    out = run([str(fresh_venv / "bin" / "python"), "-c", probe], env=clean_env(), cwd="/")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    # ...and the optional packages really are absent in this venv (else the check is moot).
    missing = run(
        [str(fresh_venv / "bin" / "python"), "-c", "import psycopg"], env=clean_env(), cwd="/"
    )
    assert missing.returncode != 0


@pytest.fixture
def fresh_server(fresh_venv: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(fresh_venv / "bin" / "safelight"), "serve", "--port", str(port),
         "--data-dir", str(tmp_path / "data")],
        env=clean_env(SAFELIGHT_STEP_DELAY_S="0.01", SAFELIGHT_PREVIEW_INTERVAL_S="0.05"),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd="/",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the fresh install's server did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_fresh_install_serves_a_job_end_to_end(fresh_server: str) -> None:
    url = fresh_server
    r = httpx.post(
        f"{url}/api/jobs",
        json={"prompt": "a lighthouse at dusk", "steps": 6, "width": 96, "height": 64},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    ws = url.replace("http://", "ws://") + f"/api/jobs/{job['id']}/ws?after=0"
    events = []
    with ws_connect(ws, open_timeout=10) as conn:
        assert json.loads(conn.recv(timeout=10))["type"] == "welcome"
        while True:
            frame = json.loads(conn.recv(timeout=30))
            if frame["type"] == "ping":
                continue
            events.append(frame)
            if frame["type"] in ("completed", "failed", "cancelled"):
                break
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "completed", events[-1]
    image = events[-1]["data"]["images"][0]
    got = httpx.get(f"{url}{image['url']}?download=1", timeout=10)
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/png"
    png = Image.open(BytesIO(got.content))
    png.verify()
    assert png.format == "PNG" and png.size == (96, 64)

    # Both pages and every asset they reference come from the installed package.
    for page in ("/", f"/jobs/{job['id']}", "/docs"):
        html = httpx.get(f"{url}{page}", timeout=10)
        assert html.status_code == 200 and "<!doctype html>" in html.text.lower()
        assert "not installed in this build" not in html.text
        assets = re.findall(r'(?:src|href)="(/(?:static|docs)/[^"]+)"', html.text)
        assert assets, f"{page} references no assets"
        for asset in assets:
            a = httpx.get(f"{url}{asset}", timeout=10)
            assert a.status_code == 200, f"{page}: {asset} -> {a.status_code}"
    # The ES modules import each other; follow those imports too.
    js = httpx.get(f"{url}/static/js/job.js", timeout=10).text
    for module in re.findall(r'from "\./([\w.-]+\.js)"', js):
        assert httpx.get(f"{url}/static/js/{module}", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/x"], "postgres"),
        (["worker", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/x"], "postgres"),
        (["serve", "--providers", "builtin,diffusers"], "diffusers"),
    ],
)
def test_mode_without_its_extra_says_so_in_one_line(
    fresh_venv: Path, tmp_path: Path, args: list[str], extra: str
) -> None:
    out = run(
        [str(fresh_venv / "bin" / "safelight"), *args, "--data-dir", str(tmp_path / "d")],
        env=clean_env(),
        cwd="/",
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert f"pip install 'safelight[{extra}]'" in lines[0]
    assert "Traceback" not in out.stdout + out.stderr


def test_scripts_serve_from_a_clean_clone_answers_healthz(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    cloned = run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)])
    assert cloned.returncode == 0, cloned.stderr
    assert not (clone / ".venv").exists()
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(clone / "scripts" / "serve"), "--port", str(port), "--data-dir", str(tmp_path / "d")],
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(clone),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600  # the first run installs the package
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.25)
        assert (clone / ".venv" / "bin" / "safelight").exists()
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "Generate" in page.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
