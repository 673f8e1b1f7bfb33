"""Secrets at rest: platform tokens and webhook signing secrets are stored encrypted under the operator's key.

`HANDOFF_SECRET_KEY` holds one or more Fernet keys, comma-separated: the first encrypts, every one decrypts, so
a key is rotated by putting the new one first, restarting, re-encrypting the stored values (each service's
`rotate-secrets`) and then dropping the old one. Stored ciphertexts start with `enc:v1:`; a value without the
prefix is an older row written in clear, still read as it is and encrypted by the next rotation.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "enc:v1:"
# Development and tests, with no key set, use this key derived from a published phrase: it protects nothing,
# and production refuses to start without a key of its own (see `ServiceSettings`).
DEVELOPMENT_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"handoff development secret key").digest()).decode()
GENERATE_HINT = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


class SecretKeyError(ValueError):
    """The key setting is malformed, or a stored value cannot be decrypted with any configured key."""


def parse_keys(value: str) -> list[str]:
    """The comma-separated keys of HANDOFF_SECRET_KEY, each checked to be a Fernet key; newest first."""
    keys = [part.strip() for part in value.split(",") if part.strip()]
    if not keys:
        raise SecretKeyError("HANDOFF_SECRET_KEY is empty")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            # The key itself is never echoed: this message goes to the start-up log.
            raise SecretKeyError(
                f"HANDOFF_SECRET_KEY key #{position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                f"generate one with {GENERATE_HINT}"
            ) from None
    return keys


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


class SecretBox:
    """Encrypts with the newest key and decrypts with any; values stored in clear pass through `reveal`."""

    def __init__(self, keys: list[str]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in parse_keys(",".join(keys))])

    @classmethod
    def from_setting(cls, value: str | None) -> SecretBox:
        """The box for HANDOFF_SECRET_KEY, or for the published development key when it is unset."""
        return cls(parse_keys(value) if value else [DEVELOPMENT_KEY])

    def seal(self, plain: str) -> str:
        """`enc:v1:` and a Fernet token of the value, under the newest key."""
        return PREFIX + self._fernet.encrypt(plain.encode()).decode("ascii")

    def reveal(self, stored: str) -> str:
        """The clear value of a stored one (a value stored in clear by an older version is returned as is)."""
        if not is_encrypted(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                "a stored secret cannot be decrypted with any key in HANDOFF_SECRET_KEY (was a key dropped "
                "before rotate-secrets ran?)"
            ) from None

    def rotate(self, stored: str) -> str:
        """The value encrypted under the newest key, whether it was in clear or under an older key."""
        if not is_encrypted(stored):
            return self.seal(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX) :].encode("ascii")).decode("ascii")
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted with any key in HANDOFF_SECRET_KEY") from None
