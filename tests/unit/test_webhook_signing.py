"""Server-side signing against the client's verify helper (two implementations that must
agree), tampering, staleness and the persisted secret."""

from __future__ import annotations

import base64
import stat
import time
from pathlib import Path

import pytest

from safelight.client.webhooks import verify
from safelight.errors import WebhookRejected
from safelight.webhooks import signing

BODY = b'{"type":"job.completed","data":{"job_id":"j","seq":7}}'


def signed(secret: str, body: bytes = BODY, ts: int | None = None) -> dict[str, str]:
    return signing.headers(signing.secret_key(secret), "msg_1", ts or int(time.time()), body)


def test_a_signed_delivery_verifies() -> None:
    secret = signing.new_secret()
    payload = verify(secret, signed(secret), BODY)
    assert payload["data"] == {"job_id": "j", "seq": 7}


def test_header_names_are_case_insensitive_and_any_signature_may_match() -> None:
    secret = signing.new_secret()
    headers = {k.upper(): v for k, v in signed(secret).items()}
    headers["WEBHOOK-SIGNATURE"] = "v1,AAAA " + headers["WEBHOOK-SIGNATURE"]
    assert verify(secret, headers, BODY)["type"] == "job.completed"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"7", b"8")),
        lambda h, b: ({**h, "webhook-id": "msg_2"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
        lambda h, b: ({**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, b),
    ],
)
def test_tampering_is_rejected(tamper: object) -> None:
    secret = signing.new_secret()
    headers, body = tamper(signed(secret), BODY)  # type: ignore[operator]
    with pytest.raises(WebhookRejected) as info:
        verify(secret, headers, body)
    assert info.value.code == "bad_signature"


def test_wrong_secret_stale_and_missing() -> None:
    secret = signing.new_secret()
    with pytest.raises(WebhookRejected, match="no signature"):
        verify(signing.new_secret(), signed(secret), BODY)
    old = int(time.time()) - 301
    with pytest.raises(WebhookRejected) as info:
        verify(secret, signed(secret, ts=old), BODY)
    assert info.value.code == "stale"
    future = int(time.time()) + 301
    with pytest.raises(WebhookRejected):
        verify(secret, signed(secret, ts=future), BODY)
    with pytest.raises(WebhookRejected) as info:
        verify(secret, {"webhook-id": "x"}, BODY)
    assert info.value.code == "missing_headers"


def test_signature_matches_the_standard_construction() -> None:
    # HMAC-SHA256 over "id.timestamp.body" with the base64-decoded secret, base64 output.
    import hashlib
    import hmac

    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    mac = hmac.new(key, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    assert signing.signature(signing.secret_key(secret), "msg_1", 1700000000, BODY) == expected


def test_secret_is_created_once_private_and_reused(tmp_path: Path) -> None:
    first = signing.load_or_create_secret(None, tmp_path)
    path = tmp_path / signing.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.load_or_create_secret(None, tmp_path) == first
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    configured = signing.new_secret()
    assert signing.load_or_create_secret(configured, tmp_path) == configured
    with pytest.raises(ValueError, match="whsec_"):
        signing.load_or_create_secret("not-a-secret", tmp_path)
