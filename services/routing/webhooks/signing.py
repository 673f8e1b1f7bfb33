"""Standard Webhooks signing (pure): secrets, `v1,` signatures over `{id}.{timestamp}.{body}`, the payload shape."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from common.envelope import dumps

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix the spec gives secrets, not a secret
_BLOCK = 64  # SHA-256's block size


def new_secret() -> str:
    """A signing secret: `whsec_` and the base64 of 32 random bytes (the spec asks for at least 24)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=1024)
def _key(secret: str) -> tuple[Any, Any]:
    """The HMAC-SHA256 of a secret's key (its base64-decoded part) with the padded key already hashed in (RFC 2104),
    computed once: every attempt copies the two states, which spares OpenSSL's look-up of the digest by name that
    `hmac.digest` makes on every call (about a third of the HMAC of a 2 KB body)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64 HMAC-SHA256>` signature of `{id}.{timestamp}.{body}`, keyed by the decoded secret."""
    inner_state, outer_state = _key(secret)
    inner = inner_state.copy()
    inner.update(b"%s.%d.%s" % (msg_id.encode(), timestamp, body))
    outer = outer_state.copy()
    outer.update(inner.digest())
    return "v1," + binascii.b2a_base64(outer.digest(), newline=False).decode("ascii")


def signature_header(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret in force, space-separated."""
    if len(secrets_) == 1:  # no rotation under way: the common case
        return sign(secrets_[0], msg_id, timestamp, body)
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_)


def webhook_body(event_type: str, timestamp: datetime, data: Mapping[str, Any]) -> str:
    """The Standard Webhooks payload shape: `{"type", "timestamp", "data"}`."""
    return dumps({"type": event_type, "timestamp": timestamp, "data": data}).decode("utf-8")
