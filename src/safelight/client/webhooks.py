"""Receiving Safelight webhooks: check that a delivery is authentic before trusting it.

    from safelight.client.webhooks import verify

    payload = verify(secret, request.headers, raw_body)   # raises WebhookRejected

Safelight signs deliveries the Standard Webhooks way: ``webhook-signature`` holds one or
more space-separated ``v1,<base64>`` values, each an HMAC-SHA256 (key: the base64 part of
the server's ``whsec_...`` secret) over ``{webhook-id}.{webhook-timestamp}.{body}``.  Pass
the body exactly as received (bytes, before any JSON parsing).  A timestamp more than
``tolerance_s`` away from now is refused, so a captured delivery cannot be replayed later;
dedupe on ``webhook-id`` (the same on every retry) or on ``data.job_id`` + ``data.seq``.
This module is standalone (no server code), see docs/webhooks.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from safelight.errors import WebhookRejected

DEFAULT_TOLERANCE_S = 300


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivery's JSON payload if the signature and timestamp are valid; otherwise
    ``WebhookRejected`` (``code``: ``missing_headers``, ``bad_timestamp``, ``stale`` or
    ``bad_signature``).  ``headers`` may be any case."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookRejected(
            "webhook-id, webhook-timestamp and webhook-signature are required",
            code="missing_headers",
        )
    try:
        sent = int(stamp)
    except ValueError:
        raise WebhookRejected("webhook-timestamp is not a number", code="bad_timestamp") from None
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        raise WebhookRejected(
            f"webhook-timestamp is {int(current - sent)} s away from now", code="stale"
        )
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = hmac.new(_key(secret), f"{msg_id}.{sent}.".encode() + raw, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(given, expected):
            return dict(json.loads(raw))
    raise WebhookRejected("no signature matches this body", code="bad_signature")


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError("the secret must be the server's whsec_<base64> value") from exc
