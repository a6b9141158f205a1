"""Schema-driven fuzzing (Schemathesis) of every JSON route of a real server: no input may
cause a 5xx, and invalid input must be rejected (research/reliability-anchors.md R18)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import LiveServer


def test_no_generated_request_breaks_the_server(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server(step_delay_s=0.001, queue_limit=100000)
    st = shutil.which("st")
    assert st is not None, "schemathesis is not installed (scripts/install --all)"
    result = subprocess.run(
        [
            st,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error,negative_data_rejection",
            "--phases",
            "coverage,fuzzing",
            "--max-examples",
            "25",
            "--workers",
            "2",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
    assert "Traceback" not in server.log()
