"""API keys for lead sources, and masking of personal data for logs."""

from __future__ import annotations

import hashlib
import hmac
import secrets

LIVE_PREFIX = "hk_live"
PUBLISHABLE_PREFIX = "hk_pub"
_TOKEN_BYTES = 32
_TOKEN_CHARS = 43  # len(secrets.token_urlsafe(32)): base64 of 32 bytes without padding


def new_api_key(prefix: str = LIVE_PREFIX) -> str:
    """A new secret key ``<prefix>_<43 url-safe chars>`` (256 random bits); shown once, stored hashed."""
    # The prefix makes leaked keys recognisable to secret scanners and to people reading logs.
    return f"{prefix}_{secrets.token_urlsafe(_TOKEN_BYTES)}"


def new_publishable_key() -> str:
    """A key meant to sit in a web page's form script (``hk_pub_...``): it may only submit leads."""
    return new_api_key(PUBLISHABLE_PREFIX)


def key_prefix(key: str) -> str:
    """The identifiable, non-secret part of a key (e.g. ``hk_live``), for display and logs."""
    # The random part may itself contain "_", so the prefix is found by length, not by splitting.
    if len(key) <= _TOKEN_CHARS + 1 or key[-_TOKEN_CHARS - 1] != "_":
        return ""
    return key[: -_TOKEN_CHARS - 1]


def hash_api_key(key: str) -> str:
    """SHA-256 hex of a key, the only form we store."""
    # A fast hash is right here: the keys carry 256 bits of randomness, so there is nothing for a
    # slow KDF (bcrypt/argon2) to protect against brute force, and a fast hash lets us look keys
    # up by hash on every request without adding milliseconds per call.
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    """Whether ``key`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_api_key(key).encode(), stored_hash.strip().lower().encode())


def mask_email(email: str | None) -> str | None:
    """``ada.lovelace@example.com`` -> ``a***@e***.com``: enough to correlate logs, not to identify."""
    if email is None:
        return None
    local, at, domain = email.rpartition("@")
    if not at or not local:
        return "***"
    name, dot, tld = domain.rpartition(".")
    masked_domain = f"{name[:1]}***.{tld}" if dot and name else "***"
    return f"{local[:1]}***@{masked_domain}"


def mask_phone(phone: str | None) -> str | None:
    """``+14155552671`` -> ``+*********71``: keeps only the last two digits."""
    if phone is None:
        return None
    digits = [ch for ch in phone if ch.isdigit()]
    if len(digits) <= 2:
        return "*" * len(digits) or "***"
    prefix = "+" if phone.strip().startswith("+") else ""
    return prefix + "*" * (len(digits) - 2) + "".join(digits[-2:])
