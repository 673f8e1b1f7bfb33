"""Standard Webhooks signing (pure): secrets, `v1,` signatures over `{id}.{timestamp}.{body}`, the payload shape."""

from __future__ import annotations

import base64
import functools
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from common.envelope import dumps

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix the spec gives secrets, not a secret


def new_secret() -> str:
    """A signing secret: `whsec_` and the base64 of 32 random bytes (the spec asks for at least 24)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@functools.lru_cache(maxsize=1024)
def _key(secret: str) -> bytes:
    """The HMAC key of a secret (its base64-decoded part), decoded once: every attempt signs with it."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64 HMAC-SHA256>` signature of `{id}.{timestamp}.{body}`, keyed by the decoded secret."""
    digest = hmac.digest(_key(secret), b"%s.%d.%s" % (msg_id.encode(), timestamp, body), "sha256")
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret in force, space-separated."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_)


def webhook_body(event_type: str, timestamp: datetime, data: Mapping[str, Any]) -> str:
    """The Standard Webhooks payload shape: `{"type", "timestamp", "data"}`."""
    return dumps({"type": event_type, "timestamp": timestamp, "data": data}).decode("utf-8")
