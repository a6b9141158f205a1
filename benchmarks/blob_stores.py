"""Blob store throughput and memory: write and stream back one large image per store.

    python -m benchmarks.blob_stores [--mib 8] [--repeat 3]

Runs against the real things: a temporary directory, a temporary database on the local
PostgreSQL server (127.0.0.1:5432, user postgres) and moto's S3-compatible server in a
subprocess on a free loopback port.  Prints MB/s (best of ``--repeat``) and the peak of
Python allocations during each write and read (tracemalloc; the image itself excluded).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from safelight.blobs import BlobStore, create_blob_store, image_name
from safelight.config import Settings

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(store: BlobStore, data: bytes, repeat: int) -> tuple[float, float, int, int]:
    best_w = best_r = float("inf")
    peak_w = peak_r = 0
    for n in range(repeat):
        name = image_name("bench", n + 1, 0)
        tracemalloc.start()
        t = time.perf_counter()
        store.write(name, data)
        best_w = min(best_w, time.perf_counter() - t)
        peak_w = max(peak_w, tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
        t = time.perf_counter()
        blob = store.open(name)
        assert blob is not None
        assert sum(len(c) for c in blob.chunks) == len(data)
        best_r = min(best_r, time.perf_counter() - t)
        peak_r = max(peak_r, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return len(data) / best_w / 1e6, len(data) / best_r / 1e6, peak_w, peak_r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mib", type=int, default=8, help="image size in MiB (default 8)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    # Fake credentials for the local moto server (boto3 reads them from the environment).
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = f"safelight_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        import boto3

        boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(
            Bucket="safelight-bench"
        )
        with tempfile.TemporaryDirectory() as tmp:
            base = Settings(data_dir=Path(tmp), min_free_bytes=0)
            stores = {
                "local": base,
                "postgres": base.replace(blob_store="postgres", database_url=f"{PG}/{database}"),
                "s3": base.replace(
                    blob_store="s3", blob_s3_bucket="safelight-bench", blob_s3_endpoint_url=endpoint
                ),
            }
            data = os.urandom(args.mib * 1024 * 1024)
            print(f"{args.mib} MiB image, chunks of {base.blob_chunk_bytes // 1024} KiB")
            heads = ("write MB/s", "read MB/s", "peak w MB", "peak r MB")
            print(f"{'store':10}" + "".join(f" {h:>10}" for h in heads))
            for name, settings in stores.items():
                store = create_blob_store(settings)
                store.ensure_ready()
                w, r, pw, pr = measure(store, data, args.repeat)
                store.close()
                print(f"{name:10} {w:10.0f} {r:10.0f} {pw / 1e6:10.2f} {pr / 1e6:10.2f}")
    finally:
        moto.terminate()
        moto.wait(10)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
