"""Real servers the blob-store tests run against: moto's S3-compatible HTTP server as a
subprocess on a free loopback port (a server, not an in-process mock), and a uniquely
named PostgreSQL database on the local server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

# Fixed, obviously fake credentials for the local S3 server: boto3's standard chain reads
# them from the environment, as it would read a real deployment's.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "safelight-test",
    "AWS_SECRET_ACCESS_KEY": "safelight-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@dataclass
class S3Server:
    url: str
    proc: subprocess.Popen[bytes]

    def bucket(self) -> str:
        """A fresh bucket for one test."""
        import boto3

        name = f"safelight-{uuid.uuid4().hex[:12]}"
        client = boto3.session.Session().client("s3", endpoint_url=self.url)
        client.create_bucket(Bucket=name)
        client.close()
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    os.environ.update(S3_ENV)
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            assert proc.poll() is None, f"moto_server exited: {log_path.read_text()[-2000:]}"
            try:
                httpx.get(f"{url}/moto-api/", timeout=0.5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield S3Server(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
