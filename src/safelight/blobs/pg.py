"""The ``postgres`` blob store: images as chunked ``bytea`` rows in the job database.

Scale-out without a shared disk and without a second service: the worker streams a blob
into ``blob_chunk_bytes``-sized rows and publishes its header row in the same transaction,
so the blob appears whole at commit or not at all.  Readers look the header up, then fetch
one chunk per query (a connection is held per chunk, never for a whole slow download).

Chunks are keyed by the header's id, not by name: if a name is ever rewritten, a reader
still streaming the old blob finds its chunks gone and fails loudly instead of splicing
two images together.

The two tables are created here (``CREATE TABLE IF NOT EXISTS`` under an advisory lock, so
nodes starting together do not race) until the schema history adopts them; they are
independent of the job tables.  psycopg is imported by SQLAlchemy only when this store is
chosen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from safelight.blobs import Blob, check_name
from safelight.errors import SafelightError, StorageFailure, StorageUnavailable

if TYPE_CHECKING:
    from safelight.config import Settings

metadata = MetaData()

blobs = Table(
    "safelight_blobs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

blob_chunks = Table(
    "safelight_blob_chunks",
    metadata,
    Column(
        "blob_id",
        BigInteger,
        ForeignKey("safelight_blobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# Any constant works; it only has to be the same on every node.
_SCHEMA_LOCK = 0x5AFE_B10B


class PostgresBlobStore:
    name = "postgres"

    def __init__(self, url: str, chunk_bytes: int = 256 * 1024) -> None:
        self.chunk_bytes = chunk_bytes
        # Its own small pool: blob traffic (MBs) never queues behind, or in front of,
        # the job store's single writer thread.
        self.engine: Engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresBlobStore:
        url = settings.blob_database_url or settings.database_url
        if url is None or not url.startswith("postgresql"):
            raise SafelightError(
                "blob store 'postgres' needs a PostgreSQL database_url (or blob_database_url)"
            )
        return cls(url, settings.blob_chunk_bytes)

    def ensure_ready(self) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
                metadata.create_all(conn, checkfirst=True)
                # PNG and JPEG are already compressed: skip TOAST's futile compression.
                conn.execute(
                    text("ALTER TABLE safelight_blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
                )
        except SQLAlchemyError as exc:
            raise StorageUnavailable(f"blob store 'postgres' is not reachable: {exc}") from exc

    def has_room(self) -> bool:
        return True

    def close(self) -> None:
        self.engine.dispose()

    def write(self, name: str, data: bytes) -> None:
        check_name(name)
        view = memoryview(data)
        step = self.chunk_bytes
        count = (len(view) + step - 1) // step
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(blobs).where(blobs.c.name == name))
                blob_id = conn.execute(
                    insert(blobs)
                    .values(name=name, size=len(view), chunks=count)
                    .returning(blobs.c.id)
                ).scalar_one()
                for seq in range(count):
                    # One slice at a time: the image is in memory once (the caller's
                    # bytes) plus one chunk in flight.
                    conn.execute(
                        insert(blob_chunks).values(
                            blob_id=blob_id, seq=seq, data=view[seq * step : (seq + 1) * step]
                        )
                    )
        except DBAPIError as exc:
            raise StorageFailure(
                "The server could not save the image: its blob database refused the write.",
                detail={"store": "postgres", "error": type(exc.orig).__name__},
            ) from exc

    def open(self, name: str) -> Blob | None:
        check_name(name)
        # The header and the first chunk in one query: a preview (one chunk) costs one
        # round trip.
        first = blob_chunks.alias("first")
        query = (
            select(blobs.c.id, blobs.c.size, blobs.c.chunks, first.c.data)
            .select_from(
                blobs.outerjoin(first, (first.c.blob_id == blobs.c.id) & (first.c.seq == 0))
            )
            .where(blobs.c.name == name)
        )
        try:
            with self.engine.connect() as conn:
                row = conn.execute(query).first()
        except DBAPIError as exc:
            raise StorageUnavailable("the blob database is not reachable", retry_after=5) from exc
        if row is None:
            return None
        return Blob(int(row.size), self._chunks(int(row.id), int(row.chunks), row.data))

    def _chunks(self, blob_id: int, count: int, first: bytes | None) -> Iterator[bytes]:
        if count == 0:
            return
        if first is None:
            raise StorageFailure("a blob was replaced or deleted while it was being read")
        yield bytes(first)
        query = select(blob_chunks.c.data).where(
            blob_chunks.c.blob_id == blob_id, blob_chunks.c.seq == bindparam("seq")
        )
        for seq in range(1, count):
            with self.engine.connect() as conn:
                data = conn.execute(query, {"seq": seq}).scalar()
            if data is None:
                raise StorageFailure("a blob was replaced or deleted while it was being read")
            yield bytes(data)
