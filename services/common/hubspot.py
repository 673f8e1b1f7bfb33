"""HubSpot's v3 request signature, checked the same way wherever HubSpot calls us (ingest's lead webhooks,
routing's CRM events): base64 HMAC-SHA256 of method + URI + body + timestamp under the app's client secret,
compared in constant time, the timestamp within 5 minutes of now either way."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta

SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
MAX_SIGNATURE_AGE = timedelta(minutes=5)

# HubSpot signs the URI with exactly these percent-escapes decoded (case-insensitively) and every
# other escape left as sent; a general unquote() would break signatures for e.g. %20 or %3D.
_URI_DECODES = {
    "%3a": ":", "%2f": "/", "%3f": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2a": "*", "%2c": ",", "%3b": ";",
}  # fmt: skip
_URI_ESCAPE = re.compile("|".join(_URI_DECODES), re.IGNORECASE)


class HubSpotSignatureError(Exception):
    """The request is not HubSpot's: bad, missing or stale signature (the caller answers 401)."""


def hubspot_signed_uri(uri: str) -> str:
    """The request URI as HubSpot signs it: only its listed percent-escapes decoded."""
    return _URI_ESCAPE.sub(lambda m: _URI_DECODES[m.group(0).lower()], uri)


def hubspot_v3_signature(client_secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The signature HubSpot sends for this request (what a loopback HubSpot in the tests signs with, too)."""
    message = method.upper().encode() + hubspot_signed_uri(uri).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(client_secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_hubspot_v3(
    client_secret: str,
    method: str,
    uri: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: datetime,
) -> None:
    """Raise HubSpotSignatureError unless `signature` is HubSpot's v3 signature of this request, signed within
    5 minutes of `now`. `uri` is the full URL HubSpot called (`https://host/path?query`) exactly as received."""
    if not client_secret:
        # An empty secret would make every signature forgeable: a failed check, not a pass.
        raise HubSpotSignatureError("no signing secret configured")
    if not signature:
        raise HubSpotSignatureError(f"missing {SIGNATURE_HEADER}")
    text = (timestamp or "").strip()
    # isascii(): str.isdigit() also accepts e.g. Arabic-Indic digits, which int() would then read.
    if not text or not (text.isascii() and text.isdigit()) or len(text) > 16:
        raise HubSpotSignatureError(f"missing or malformed {TIMESTAMP_HEADER}")
    expected = hubspot_v3_signature(client_secret, method, uri, body, text)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise HubSpotSignatureError("signature mismatch")
    sent_at = datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if abs(now - sent_at) > MAX_SIGNATURE_AGE:
        raise HubSpotSignatureError(f"{TIMESTAMP_HEADER} is more than 5 minutes from now")
