"""Shared pieces for platform adapters: the platform-agnostic lead envelope and HMAC helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.domain.dates import parse_datetime
from ingest.domain.errors import FieldError, LeadValidationError, SignatureError

# Every timestamped scheme here (Webflow, HubSpot) documents a 5 minute replay window.
MAX_SIGNATURE_AGE = timedelta(minutes=5)


@dataclass(frozen=True)
class PlatformLead:
    """A lead as delivered by a platform: its id there (the dedupe key) and a raw dict for normalize_lead."""

    external_id: str
    raw: dict[str, Any] = field(default_factory=dict)
    is_test: bool = False
    erased: bool = False  # the platform asks us to delete this lead's personal data


def hmac_sha256(secret: str | bytes, message: bytes) -> bytes:
    """Raw HMAC-SHA256 digest."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).digest()


def require_secret(secret: str) -> None:
    """An empty secret would make every signature forgeable: treat it as a failed check, not a pass."""
    if not secret:
        raise SignatureError("no signing secret configured")


def check_hex(expected: bytes, given: str) -> None:
    """Compare a hex signature in constant time (case-insensitive, as platforms vary)."""
    if not hmac.compare_digest(expected.hex().encode(), given.strip().lower().encode()):
        raise SignatureError("signature mismatch")


def check_base64(expected: bytes, given: str) -> None:
    """Compare a base64 signature in constant time."""
    if not hmac.compare_digest(base64.b64encode(expected), given.strip().encode()):
        raise SignatureError("signature mismatch")


def parse_ms_timestamp(value: str | None, *, label: str) -> tuple[str, datetime]:
    """A Unix-milliseconds header as (the exact signed text, its time); SignatureError if unusable."""
    text = (value or "").strip()
    # isascii(): str.isdigit() also accepts e.g. Arabic-Indic digits, which int() would then read.
    if not text or not (text.isascii() and text.isdigit()) or len(text) > 16:
        raise SignatureError(f"missing or malformed {label}")
    return text, datetime.fromtimestamp(int(text) / 1000, tz=UTC)


def check_fresh(sent_at: datetime, now: datetime, *, label: str) -> None:
    """Refuse replays: the signed timestamp must be within 5 minutes of now, either way."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if abs(now - sent_at) > MAX_SIGNATURE_AGE:
        raise SignatureError(f"{label} is more than 5 minutes from now")


def require_str(payload: Mapping[str, Any], key: str, path: str | None = None) -> str:
    """A required id field as a string; LeadValidationError names it when missing."""
    value = payload.get(key) if isinstance(payload, Mapping) else None
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise LeadValidationError([FieldError(path or key, "required")])
    if not isinstance(value, str | int):
        raise LeadValidationError([FieldError(path or key, "expected a string id")])
    return str(value)


def platform_key(key: str) -> str:
    """A platform's question label as a custom-field key, cut to the 64 characters `custom` allows.

    Platforms do not retry with different data, so an over-long label must not reject the lead.
    """
    return key.strip()[:64]


def platform_time(value: Any) -> str | None:
    """A platform timestamp as ISO 8601, or None when it cannot be read (the lead is kept anyway)."""
    try:
        return parse_datetime(value).isoformat()
    except (ValueError, OverflowError, OSError):
        return None


def as_mapping(value: Any, path: str) -> Mapping[str, Any]:
    """``value`` if it is an object, else a LeadValidationError naming ``path``."""
    if not isinstance(value, Mapping):
        raise LeadValidationError([FieldError(path, "expected an object")])
    return value
