"""One contract for every blob store, run against the real thing: a directory, the local
PostgreSQL server, and moto's S3-compatible server (an HTTP server in a subprocess).

Parametrized like uvicorn's fixtures: each test runs once per store name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from safelight.blobs import BlobStore, create_blob_store, image_name, preview_name
from safelight.config import Settings
from safelight.errors import StorageFailure, StorageUnavailable
from tests.conftest import free_port
from tests.integration.conftest import S3Server

CHUNK = 4096


def settings_for(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    base = Settings(data_dir=tmp_path, min_free_bytes=0, blob_chunk_bytes=CHUNK)
    if name == "postgres":
        return base.replace(
            blob_store="postgres", database_url=request.getfixturevalue("pg_database")
        )
    if name == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return base.replace(
            blob_store="s3",
            blob_s3_endpoint_url=server.url,
            blob_s3_bucket=server.bucket(),
            blob_s3_prefix="tenant-a/",
        )
    return base


@pytest.fixture(
    params=["local", pytest.param("postgres", marks=pytest.mark.postgres), "s3"],
)
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    settings = settings_for(request.param, tmp_path, request)
    settings.validate()
    return settings


@pytest.fixture
def store(store_settings: Settings) -> Iterator[BlobStore]:
    blobs = create_blob_store(store_settings)
    assert blobs.name == store_settings.blob_store
    blobs.ensure_ready()
    yield blobs
    blobs.close()


def read_all(blobs: BlobStore, name: str) -> tuple[int, list[bytes]]:
    blob = blobs.open(name)
    assert blob is not None, name
    chunks = list(blob.chunks)
    blob.close()
    return blob.size, chunks


def payload(size: int, seed: int = 0) -> bytes:
    # Not compressible and not periodic at the chunk size: a misplaced chunk shows.
    return bytes((i * 7919 + seed * 104729 + (i >> 12) * 31) % 251 for i in range(size))


def test_write_then_read_streams_the_same_bytes_in_bounded_chunks(store: BlobStore) -> None:
    name = image_name("job1", 1, 0)
    data = payload(10 * CHUNK + 123)
    store.write(name, data)
    size, chunks = read_all(store, name)
    assert size == len(data)
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= CHUNK for c in chunks)
    assert len(chunks) >= 11


def test_a_missing_blob_is_none_and_names_are_attempt_scoped(store: BlobStore) -> None:
    assert store.open(image_name("nojob", 1, 0)) is None
    store.write(image_name("job2", 1, 0), b"first attempt")
    store.write(image_name("job2", 2, 0), b"second attempt")
    assert b"".join(read_all(store, image_name("job2", 1, 0))[1]) == b"first attempt"
    assert b"".join(read_all(store, image_name("job2", 2, 0))[1]) == b"second attempt"
    assert store.open(image_name("job2", 3, 0)) is None


def test_empty_and_exact_chunk_multiples(store: BlobStore) -> None:
    for size in (0, 1, CHUNK, 3 * CHUNK):
        name = preview_name("job3", 1, size, "jpg")
        store.write(name, payload(size, seed=size))
        got_size, chunks = read_all(store, name)
        assert got_size == size and b"".join(chunks) == payload(size, seed=size)


def test_rewriting_a_name_replaces_it_whole(store: BlobStore) -> None:
    name = preview_name("job4", 1, 7, "jpg")
    store.write(name, payload(5 * CHUNK, seed=1))
    store.write(name, payload(2 * CHUNK + 5, seed=2))
    size, chunks = read_all(store, name)
    assert size == 2 * CHUNK + 5 and b"".join(chunks) == payload(2 * CHUNK + 5, seed=2)


def test_a_reader_never_sees_a_partial_blob(store: BlobStore) -> None:
    """Readers race a writer of a large blob: each sees nothing or all of it."""
    name = image_name("job5", 1, 0)
    data = payload(64 * CHUNK, seed=5)
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                blob = store.open(name)
                if blob is None:
                    seen.append(0)
                    continue
                got = b"".join(blob.chunks)
                assert blob.size == len(data) and got == data
                seen.append(len(got))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        store.write(name, data)
        # Let the readers observe the finished blob a few times too.
        while seen.count(len(data)) < 3 and not errors:
            threading.Event().wait(0.01)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert set(seen) <= {0, len(data)}
    assert len(data) in seen


def test_an_image_is_never_held_in_memory_twice(store_settings: Settings) -> None:
    """Python-level allocations while writing and streaming a 6 MiB image stay far below
    the image's size: no store makes a second whole copy (join, bytes(), read())."""
    blobs = create_blob_store(store_settings.replace(blob_chunk_bytes=256 * 1024))
    blobs.ensure_ready()
    data = os.urandom(6 * 1024 * 1024)
    name = image_name("mem", 1, 0)
    blobs.write(preview_name("mem", 1, 0, "jpg"), data[:1000])  # warm up connections
    tracemalloc.start()
    try:
        blobs.write(name, data)
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        blob = blobs.open(name)
        assert blob is not None
        total = sum(len(chunk) for chunk in blob.chunks)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        blobs.close()
    assert total == len(data)
    assert write_peak < len(data) // 2, write_peak
    assert read_peak < len(data) // 2, read_peak


def test_names_that_are_not_blob_names_are_refused(store: BlobStore) -> None:
    for bad in ("../etc/passwd", "job/1/../../x.png", "/abs/1/image-0.png", "job/1/other.txt"):
        with pytest.raises(ValueError, match="blob name"):
            store.write(bad, b"x")
        with pytest.raises(ValueError, match="blob name"):
            store.open(bad)


def test_a_local_store_keeps_todays_paths_and_free_space_floor(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, min_free_bytes=0)
    blobs = create_blob_store(settings)
    blobs.ensure_ready()
    blobs.write(image_name("abc", 2, 1), b"png")
    assert (tmp_path / "blobs" / "abc" / "2" / "image-1.png").read_bytes() == b"png"
    blobs.write(preview_name("abc", 2, 5, "jpg"), b"jpg")
    assert (tmp_path / "blobs" / "abc" / "2" / "preview-0005.jpg").read_bytes() == b"jpg"
    assert list((tmp_path / "blobs").rglob(".*.tmp")) == []
    assert blobs.has_room()
    full = create_blob_store(settings.replace(min_free_bytes=2**62))
    assert not full.has_room()


def test_an_unreachable_s3_server_is_a_storage_error(tmp_path: Path, s3_server: S3Server) -> None:
    settings = Settings(
        data_dir=tmp_path,
        blob_store="s3",
        blob_s3_bucket="nowhere",
        blob_s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        blob_s3_timeout_s=1.0,
    )
    blobs = create_blob_store(settings)
    with pytest.raises(StorageUnavailable):
        blobs.ensure_ready()
    with pytest.raises(StorageFailure) as failure:
        blobs.write(image_name("j", 1, 0), b"x")
    assert failure.value.to_error()["type"] == "storage"
    with pytest.raises(StorageUnavailable):
        blobs.open(image_name("j", 1, 0))


def test_a_missing_s3_bucket_is_refused_at_start(tmp_path: Path, s3_server: S3Server) -> None:
    settings = Settings(
        data_dir=tmp_path,
        blob_store="s3",
        blob_s3_bucket="no-such-bucket-here",
        blob_s3_endpoint_url=s3_server.url,
    )
    with pytest.raises(StorageUnavailable, match="no-such-bucket-here"):
        create_blob_store(settings).ensure_ready()


@pytest.mark.postgres
def test_postgres_blobs_live_in_their_own_tables(tmp_path: Path, pg_database: str) -> None:
    from sqlalchemy import create_engine, text

    settings = Settings(data_dir=tmp_path, blob_store="postgres", database_url=pg_database)
    settings = settings.replace(blob_chunk_bytes=CHUNK)
    first, second = create_blob_store(settings), create_blob_store(settings)
    # Two nodes starting at once: the advisory lock serialises the table creation.
    starters = [threading.Thread(target=s.ensure_ready) for s in (first, second)]
    for t in starters:
        t.start()
    for t in starters:
        t.join(30)
    first.write(image_name("pgjob", 1, 0), payload(3 * CHUNK + 1))
    assert b"".join(read_all(second, image_name("pgjob", 1, 0))[1]) == payload(3 * CHUNK + 1)
    engine = create_engine(pg_database)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM safelight_blob_chunks")).scalar()
        assert rows == 4
    engine.dispose()
    first.close()
    second.close()


def test_blob_store_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="blob_s3_bucket"):
        Settings.load({"data_dir": tmp_path, "blob_store": "s3"}, environ={})
    with pytest.raises(ValueError, match="database_url"):
        Settings.load({"data_dir": tmp_path, "blob_store": "postgres"}, environ={})
    env = {"SAFELIGHT_BLOB_STORE": "s3", "SAFELIGHT_BLOB_S3_BUCKET": "b"}
    assert Settings.load({"data_dir": tmp_path}, environ=env).blob_s3_bucket == "b"


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_node_with_an_unreachable_blob_store_refuses_to_start_in_one_line(
    tmp_path: Path, s3_server: S3Server, command: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFELIGHT_")}
    env.update(
        SAFELIGHT_BLOB_STORE="s3",
        SAFELIGHT_BLOB_S3_BUCKET="no-such-bucket-here",
        SAFELIGHT_BLOB_S3_ENDPOINT_URL=s3_server.url,
        SAFELIGHT_LOG_LEVEL="warning",
    )
    args = [sys.executable, "-m", "safelight", command, "--data-dir", str(tmp_path)]
    if command == "worker":
        args += ["--database-url", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"]
    else:
        args += ["--port", str(free_port())]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "no-such-bucket-here" in r.stderr and "not reachable" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


BLOCK_OPTIONAL = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"boto3", "botocore", "psycopg", "psycopg2"}:
            raise ImportError(f"No module named {name!r} (blocked: base install)")
sys.meta_path.insert(0, Block())
"""


def test_embedded_mode_needs_neither_boto3_nor_psycopg(tmp_path: Path) -> None:
    """The base install (no extras) builds the local store and the whole app; asking for
    the s3 store there is one clear line naming the extra."""
    build = BLOCK_OPTIONAL + (
        "from pathlib import Path\n"
        "from safelight.config import Settings\n"
        "from safelight.runtime import Runtime\n"
        f"rt = Runtime.build(Settings(data_dir=Path({str(tmp_path)!r})))\n"
        "print(type(rt.blobs).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", build], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "LocalBlobStore"
    serve = BLOCK_OPTIONAL + "from safelight.cli import main\nsys.exit(main())\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFELIGHT_")}
    env.update(SAFELIGHT_BLOB_STORE="s3", SAFELIGHT_BLOB_S3_BUCKET="b")
    args = [sys.executable, "-c", serve, "serve", "--data-dir", str(tmp_path / "s3")]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "needs the s3 extra" in r.stderr and "Traceback" not in r.stderr
