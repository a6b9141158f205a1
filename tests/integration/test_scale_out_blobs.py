"""Scale-out without a shared disk: 2 API nodes and a worker on PostgreSQL, each with its
own data directory, blobs in the `postgres` store or in S3 (moto's real server).  The
worker writes every image; the API nodes, which never saw the bytes, stream them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST, LiveServer
from tests.integration.conftest import S3Server
from tests.integration.helpers import create, poll, wait_status
from tests.integration.test_scale_out import WorkerProcess

pytestmark = pytest.mark.postgres


def blob_settings(store: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if store == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return {
            "blob_store": "s3",
            "blob_s3_endpoint_url": server.url,
            "blob_s3_bucket": server.bucket(),
            "blob_s3_prefix": "cluster/",
        }
    return {"blob_store": "postgres"}


@pytest.mark.parametrize("store", ["postgres", "s3"])
def test_images_and_previews_are_served_by_nodes_that_did_not_write_them(
    store: str, tmp_path: Path, pg_database: str, request: pytest.FixtureRequest
) -> None:
    # Small chunks so every image spans many rows / ranges.
    blobs = {"blob_chunk_bytes": 8192, **blob_settings(store, request)}
    common = {**FAST, "database_url": pg_database, **blobs}
    started: list[Any] = []
    try:
        a = LiveServer(tmp_path / "node-a", {**common, "concurrency": 0}).start()
        started.append(a)
        b = LiveServer(tmp_path / "node-b", {**common, "concurrency": 0}).start()
        started.append(b)
        worker = WorkerProcess(tmp_path / "worker", pg_database, "w1", **blobs).start()
        started.append(worker)

        job = create(a.url, steps=12, num_images=2, width=256, height=256)
        done = wait_status(b.url, job["id"], {"completed"}, timeout=60)
        assert len(done["images"]) == 2
        for node in (a, b):
            for image in done["images"]:
                r = httpx.get(f"{node.url}{image['url']}")
                assert r.status_code == 200, r.text
                assert r.content.startswith(b"\x89PNG")
                assert len(r.content) == image["bytes"] == int(r.headers["content-length"])
                assert r.headers["content-type"] == "image/png"
                assert "immutable" in r.headers["cache-control"]
                assert r.headers["x-content-type-options"] == "nosniff"
            download = httpx.get(f"{node.url}{done['images'][0]['url']}?download=1")
            assert download.headers["content-disposition"].startswith("attachment")
            assert httpx.get(f"{node.url}/api/jobs/{job['id']}/images/2").status_code == 404

        previews = [e for e in poll(a.url, job["id"], 0)["events"] if e["type"] == "preview"]
        assert previews, "the job should have published previews"
        for event in previews:
            r = httpx.get(f"{b.url}{event['data']['url']}")
            assert r.status_code == 200 and r.content.startswith(b"\xff\xd8")
        assert httpx.get(f"{a.url}/api/jobs/{job['id']}/previews/1/99999").status_code == 404

        # Nothing was served from a disk: no node holds an image file.
        for data_dir in ("node-a", "node-b", "worker"):
            files = [p for p in (tmp_path / data_dir).rglob("*") if p.suffix in (".png", ".jpg")]
            assert files == [], files
    finally:
        for part in reversed(started):
            part.stop()
