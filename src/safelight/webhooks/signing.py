"""Standard Webhooks signatures, and the server's signing secret.

Each delivery carries ``webhook-id`` (the delivery id, the same on every retry),
``webhook-timestamp`` (epoch seconds of this attempt) and ``webhook-signature``:
``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.".encode() + body)), where the key is
the base64-decoded part of a ``whsec_...`` secret.  The receiver's side is
``safelight.client.webhooks.verify``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

PREFIX = "whsec_"
SECRET_FILE = "webhook_secret"  # noqa: S105  # nosec B105 - a file name, not a secret


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; raises ``ValueError`` otherwise."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret must look like whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret must look like whsec_<base64>") from exc
    if len(key) < 24:
        raise ValueError("a webhook secret must hold at least 24 random bytes")
    return key


def load_or_create_secret(configured: str | None, data_dir: Path) -> str:
    """The configured secret, or the one kept in ``data_dir`` (created on first use;
    nodes sharing a data directory agree on one)."""
    if configured:
        secret_key(configured)
        return configured
    path = data_dir / SECRET_FILE
    if not path.exists():
        # Write a private temp file, then link it into place: link() fails if another
        # node won the race, and nobody ever reads a half-written secret.
        tmp = data_dir / f".{SECRET_FILE}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(new_secret() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_text().strip()
    secret_key(secret)
    return secret


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }
