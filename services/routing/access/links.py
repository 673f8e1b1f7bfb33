"""Signed single-use action links: a rep acts on a lead (or sets themself away) with one click from a message.

A link is `<base>/v1/links/<token>`; the token is the base64url JSON claims (lead, action, rep, expiry, nonce) and
an HMAC-SHA256 over them under a key derived from HANDOFF_SECRET_KEY (the newest key signs, any configured one
verifies, so a key rotation does not void links already sent). Single use is the used_link_nonces table, written
in the action's own transaction. Pure: no web or database code here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common.crypto import DEVELOPMENT_KEY, parse_keys

LINK_ACTIONS = ("accept", "claim", "touch", "reject", "away")
LABELS = {"accept": "Accept", "claim": "Claim", "touch": "Mark touched", "reject": "Reject", "away": "Set me away"}
DEFAULT_TTL = timedelta(days=3)
_PURPOSE = b"handoff action links v1"


class LinkRefused(ValueError):
    """The link is malformed, tampered with or expired; the message says which, without saying more."""


@dataclass(frozen=True)
class ActionLink:
    lead_id: str
    action: str
    rep_id: str
    expires_at: datetime
    nonce: str


def link_keys(secret_key: str | None) -> list[bytes]:
    """One HMAC key per configured HANDOFF_SECRET_KEY key (the development key when unset), newest first."""
    keys = parse_keys(secret_key) if secret_key else [DEVELOPMENT_KEY]
    return [hmac.new(key.encode(), _PURPOSE, hashlib.sha256).digest() for key in keys]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(keys: Sequence[bytes], lead_id: str, action: str, rep_id: str, expires_at: datetime) -> str:
    """A token for one action by one rep on one lead, valid until `expires_at`."""
    if action not in LINK_ACTIONS:
        raise ValueError(f"unknown link action {action!r}")
    claims = {"l": lead_id, "a": action, "r": rep_id, "e": int(expires_at.timestamp()), "n": secrets.token_hex(16)}
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    mac = _b64(hmac.new(keys[0], body.encode("ascii"), hashlib.sha256).digest())
    return f"{body}.{mac}"


def verify(keys: Sequence[bytes], token: str, now: datetime) -> ActionLink:
    """The link's claims; raises LinkRefused when the signature does not match or it has expired."""
    body, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
    except (binascii.Error, ValueError):
        raise LinkRefused("this link is not valid (it was changed or cut short)") from None
    expected = [hmac.new(key, body.encode("ascii", "replace"), hashlib.sha256).digest() for key in keys]
    if not any([hmac.compare_digest(given, candidate) for candidate in expected]):
        raise LinkRefused("this link is not valid (it was changed or cut short)")
    try:
        claims = json.loads(_unb64(body))
        link = ActionLink(
            str(claims["l"]),
            str(claims["a"]),
            str(claims["r"]),
            datetime.fromtimestamp(int(claims["e"]), UTC),
            str(claims["n"]),
        )
    except (ValueError, KeyError, TypeError):
        raise LinkRefused("this link is not valid (it was changed or cut short)") from None
    if link.action not in LINK_ACTIONS:
        raise LinkRefused("this link is not valid (unknown action)")
    if now >= link.expires_at:
        raise LinkRefused(f"this link expired at {link.expires_at.strftime('%Y-%m-%d %H:%M UTC')}")
    return link


ASSIGNED_ACTIONS = ("accept", "touch", "reject", "away")


def action_links(
    keys: Sequence[bytes],
    base_url: str,
    lead_id: str,
    rep_id: str,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    actions: Sequence[str] = ASSIGNED_ACTIONS,
) -> list[tuple[str, str]]:
    """(label, url) for each action a notified rep can take: on a lead assigned to them, or ("claim",) a queued one."""
    base = base_url.rstrip("/")
    return [(LABELS[action], f"{base}/v1/links/{sign(keys, lead_id, action, rep_id, now + ttl)}") for action in actions]
