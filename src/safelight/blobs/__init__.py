"""Blob stores for previews and final images, chosen by name like providers.

``local`` (a directory, the default), ``postgres`` (chunked rows in the job database) and
``s3`` (any S3-compatible object store).  Only the chosen store's module is imported, so
the base install never needs psycopg or boto3 for blobs.

Every store keeps the same two promises the worker and the API rely on:

- **Atomic**: a blob is visible under its name only once complete; a reader gets the whole
  blob or nothing, never a truncated image.
- **Attempt-scoped names** (``{job}/{attempt}/...``): a zombie attempt writes only its own
  names, and events reference a blob only after its write returned.

Reads stream in chunks of at most ``chunk_bytes``; a store never holds a whole image in
memory twice.  Write failures become ``StorageFailure`` (the attempt fails with a
``storage`` error); a store that cannot be reached at start raises ``StorageUnavailable``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from safelight.errors import SafelightError

if TYPE_CHECKING:
    from safelight.config import Settings

BLOB_STORES: dict[str, str] = {
    "local": "safelight.blobs.local:LocalBlobStore",
    "postgres": "safelight.blobs.pg:PostgresBlobStore",
    "s3": "safelight.blobs.s3:S3BlobStore",
}

# Names are built only from job ids and integers, never from request text; every store
# still refuses anything else, so a key can never escape its root, table or prefix.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}/[0-9]{1,6}/(preview|image)-[0-9]{1,6}\.(png|jpg)$")


def preview_name(job_id: str, attempt: int, step: int, ext: str) -> str:
    return f"{job_id}/{attempt}/preview-{step:04d}.{ext}"


def image_name(job_id: str, attempt: int, index: int) -> str:
    return f"{job_id}/{attempt}/image-{index}.png"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a blob name: {name!r}")
    return name


def _no_close() -> None:
    return None


@dataclass
class Blob:
    """An open blob: its size and a blocking iterator over its bytes, read lazily.

    ``path`` is set when the blob is a local file (the API then serves it with
    ``FileResponse``: sendfile, ranges).  ``close`` releases what ``chunks`` holds open
    if the iterator is abandoned early."""

    size: int
    chunks: Iterator[bytes]
    path: Path | None = None
    close: Callable[[], None] = field(default=_no_close)


class BlobStore(Protocol):
    name: str

    def ensure_ready(self) -> None:
        """Create what the store needs (directory, table); ``StorageUnavailable`` if not
        reachable or not writable."""

    def has_room(self) -> bool:
        """False when new work should be refused (local disk under ``min_free_bytes``)."""

    def write(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` atomically (replacing any earlier blob)."""

    def open(self, name: str) -> Blob | None:
        """The blob, or None if it does not exist (or is not complete yet)."""

    def close(self) -> None:
        """Release connections and pools."""


def create_blob_store(settings: Settings) -> BlobStore:
    """Build the store registered under ``settings.blob_store``."""
    try:
        target = BLOB_STORES[settings.blob_store]
    except KeyError:
        raise SafelightError(
            f"unknown blob store {settings.blob_store!r}; known: {', '.join(BLOB_STORES)}"
        ) from None
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    store: BlobStore = cls.from_settings(settings)
    return store


__all__ = [
    "BLOB_STORES",
    "Blob",
    "BlobStore",
    "check_name",
    "create_blob_store",
    "image_name",
    "preview_name",
]
