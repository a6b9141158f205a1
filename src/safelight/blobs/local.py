"""The ``local`` blob store: a directory (the default; in scale-out a shared mount).

Files are written under attempt-scoped names (``{job}/{attempt}/...``) with an atomic
write (temporary file, fsync, rename), so a reader never sees a truncated image and a
zombie attempt can never overwrite the winner's files.  OS errors become ``StorageFailure``.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from safelight.blobs import Blob, check_name
from safelight.errors import StorageFailure, StorageUnavailable

if TYPE_CHECKING:
    from safelight.config import Settings

_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.EIO}


class LocalBlobStore:
    name = "local"

    def __init__(self, root: Path, min_free_bytes: int = 0, chunk_bytes: int = 256 * 1024) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.chunk_bytes = chunk_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBlobStore:
        return cls(settings.blob_dir, settings.min_free_bytes, settings.blob_chunk_bytes)

    def ensure_ready(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create {self.root}: {exc.strerror}") from exc

    def has_room(self) -> bool:
        try:
            return shutil.disk_usage(self.root).free >= self.min_free_bytes
        except OSError:
            return False

    def close(self) -> None:
        return None

    def path(self, name: str) -> Path:
        # Names are checked, but keep the guarantee local: the result must stay inside
        # the root.
        candidate = (self.root / check_name(name)).resolve()
        if self.root.resolve() not in candidate.parents:
            raise ValueError(f"blob name escapes the blob root: {name!r}")
        return candidate

    def write(self, name: str, data: bytes) -> None:
        target = self.path(name)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in _STORAGE_ERRNOS:
                raise StorageFailure(
                    "The server could not save the image: its storage is full or not writable.",
                    detail={"errno": errno.errorcode.get(exc.errno or 0, "unknown")},
                ) from exc
            raise

    def open(self, name: str) -> Blob | None:
        check_name(name)  # a malformed name is a caller's bug: ValueError
        try:
            path = self.path(name)
        except ValueError:  # a valid name resolving outside the root (planted symlink)
            return None
        try:
            f = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        size = os.fstat(f.fileno()).st_size
        return Blob(size, _read_chunks(f, self.chunk_bytes), path=path, close=f.close)


def _read_chunks(f: IO[bytes], chunk_bytes: int) -> Iterator[bytes]:
    with f:
        while chunk := f.read(chunk_bytes):
            yield chunk
