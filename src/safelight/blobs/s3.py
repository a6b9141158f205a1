"""The ``s3`` blob store: any S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage,
...) through boto3, imported only when this store is chosen (the ``s3`` extra).

A single PUT is atomic in S3: an object is visible under its key only once the upload is
complete, which is the same promise the local store's rename gives.  Reads stream the
object body in ``blob_chunk_bytes`` pieces.

Credentials are never settings: boto3's standard chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and the shared config files, an instance or
container role) supplies them.  With a custom ``blob_s3_endpoint_url`` the client uses
path-style addressing, which every S3-compatible server accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from safelight.blobs import Blob, check_name
from safelight.errors import SafelightError, StorageFailure, StorageUnavailable

if TYPE_CHECKING:
    from safelight.config import Settings

_MISSING = {"NoSuchKey", "404", "NotFound"}
_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


class S3BlobStore:
    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        chunk_bytes: int = 256 * 1024,
        timeout_s: float = 10.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.chunk_bytes = chunk_bytes
        config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        if not settings.blob_s3_bucket:
            raise SafelightError("blob store 's3' needs blob_s3_bucket")
        return cls(
            settings.blob_s3_bucket,
            prefix=settings.blob_s3_prefix,
            endpoint_url=settings.blob_s3_endpoint_url,
            region=settings.blob_s3_region,
            chunk_bytes=settings.blob_chunk_bytes,
            timeout_s=settings.blob_s3_timeout_s,
        )

    def key(self, name: str) -> str:
        return f"{self.prefix}{check_name(name)}"

    def ensure_ready(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(
                f"blob store 's3': bucket {self.bucket!r} is not reachable: {exc}"
            ) from exc

    def has_room(self) -> bool:
        return True

    def close(self) -> None:
        self.client.close()

    def write(self, name: str, data: bytes) -> None:
        key = self.key(name)
        content_type = _TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise StorageFailure(
                "The server could not save the image: its object store refused the write.",
                detail={"store": "s3", "error": _code(exc)},
            ) from exc

    def open(self, name: str) -> Blob | None:
        key = self.key(name)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise StorageUnavailable("the object store refused a read", retry_after=5) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("the object store is not reachable", retry_after=5) from exc
        body = obj["Body"]
        return Blob(int(obj["ContentLength"]), _stream(body, self.chunk_bytes), close=body.close)


def _stream(body: Any, chunk_bytes: int) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__
