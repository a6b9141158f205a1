"""Blob storage for previews and final images: a local directory.

Files are written under attempt-scoped names (``{job}/{attempt}/...``) with an atomic
write (temporary file, fsync, rename), so a reader never sees a truncated image and a
zombie attempt can never overwrite the winner's files.  OS errors become ``StorageFailure``.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from safelight.errors import StorageFailure, StorageUnavailable

_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.EIO}


class BlobStore:
    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes

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

    @staticmethod
    def preview_name(job_id: str, attempt: int, step: int, ext: str) -> str:
        return f"{job_id}/{attempt}/preview-{step:04d}.{ext}"

    @staticmethod
    def image_name(job_id: str, attempt: int, index: int) -> str:
        return f"{job_id}/{attempt}/image-{index}.png"

    def path(self, name: str) -> Path:
        # Names are built only from ids and integers (never from request text), but keep
        # the guarantee local: the result must stay inside the root.
        candidate = (self.root / name).resolve()
        if self.root.resolve() not in candidate.parents:
            raise ValueError(f"blob name escapes the blob root: {name!r}")
        return candidate

    def write(self, name: str, data: bytes) -> Path:
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
        return target
