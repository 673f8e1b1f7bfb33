"""Standard Webhooks signing: secrets, signatures and payloads, checked against the reference implementation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from routing.webhooks.signing import SECRET_PREFIX, new_secret, sign, signature_header, webhook_body

pytestmark = pytest.mark.unit


def _headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_secrets_are_whsec_and_at_least_24_random_bytes() -> None:
    made = {new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith(SECRET_PREFIX)
        assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)) >= 24


def test_signature_is_base64_hmac_sha256_of_id_timestamp_body_keyed_by_the_decoded_secret() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"type":"lead.assigned","data":{"név":"Zoë"}}'.encode()
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert sign(secret, "msg_1", 1700000000, body) == f"v1,{expected}"


def test_reference_implementation_accepts_our_signature_and_rejects_tampering() -> None:
    secret = new_secret()
    body = webhook_body("lead.assigned", datetime.now(UTC), {"lead_id": "l-1", "rep": {"id": "ana"}}).encode()
    now = int(time.time())
    good = _headers("evt-1", now, signature_header([secret], "evt-1", now, body))
    assert Webhook(secret).verify(body, good)["data"]["lead_id"] == "l-1"

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"l-1", b"l-2"), good)  # tampered body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**good, "webhook-id": "evt-2"})  # signature bound to the id
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, good)  # wrong secret
    stale = now - 600
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, _headers("evt-1", stale, signature_header([secret], "evt-1", stale, body)))


def test_during_rotation_each_secret_verifies_its_own_signature() -> None:
    new, old = new_secret(), new_secret()
    body = b'{"type":"webhook.test"}'
    now = int(time.time())
    header = signature_header([new, old], "evt-9", now, body)
    assert len(header.split(" ")) == 2 and all(part.startswith("v1,") for part in header.split(" "))
    for secret in (new, old):
        Webhook(secret).verify(body, _headers("evt-9", now, header))
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, _headers("evt-9", now, header))


def test_payload_has_the_standard_webhooks_shape() -> None:
    at = datetime(2026, 11, 27, 9, 30, 0, 123000, tzinfo=UTC)
    body = json.loads(webhook_body("lead.sla_breached", at, {"lead_id": "l-7", "late_ms": 12}))
    assert body == {
        "type": "lead.sla_breached",
        "timestamp": "2026-11-27T09:30:00.123000Z",
        "data": {"lead_id": "l-7", "late_ms": 12},
    }
