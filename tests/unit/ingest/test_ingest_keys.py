"""API keys and log masking."""

from __future__ import annotations

import hashlib
import re

import pytest

from ingest.domain import (
    hash_api_key,
    key_matches,
    key_prefix,
    mask_email,
    mask_phone,
    new_api_key,
    new_publishable_key,
)

pytestmark = pytest.mark.unit


def test_secret_keys_are_prefixed_random_and_url_safe() -> None:
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert re.fullmatch(r"hk_live_[A-Za-z0-9_-]{43}", key)
        assert key_prefix(key) == "hk_live"


def test_custom_prefix_and_publishable_keys() -> None:
    assert new_api_key("hk_test").startswith("hk_test_")
    publishable = new_publishable_key()
    assert publishable.startswith("hk_pub_") and key_prefix(publishable) == "hk_pub"


def test_hash_is_sha256_hex_and_never_the_key() -> None:
    key = new_api_key()
    stored = hash_api_key(key)
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored and len(stored) == 64


def test_key_matches_only_its_own_hash() -> None:
    key, other = new_api_key(), new_api_key()
    stored = hash_api_key(key)
    assert key_matches(key, stored)
    assert key_matches(key, stored.upper())
    assert not key_matches(other, stored)
    assert not key_matches(key[:-1], stored)
    assert not key_matches(key, "")


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("ada.lovelace@example.com", "a***@e***.com"),
        ("Ada@Engines.co.uk", "A***@E***.uk"),
        ("a@localhost", "a***@***"),
        ("not-an-email", "***"),
        (None, None),
    ],
)
def test_mask_email(email: str | None, masked: str | None) -> None:
    assert mask_email(email) == masked


def test_masked_email_reveals_neither_mailbox_nor_domain_name() -> None:
    masked = mask_email("ada.lovelace@analyticalengines.com")
    assert masked is not None and "lovelace" not in masked and "analytical" not in masked


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("+14155552671", "+*********71"), ("(415) 555-2671", "********71"), ("12", "**"), (None, None)],
)
def test_mask_phone_keeps_only_the_last_two_digits(phone: str | None, masked: str | None) -> None:
    assert mask_phone(phone) == masked


def test_key_prefix_of_something_that_is_not_our_key_is_empty() -> None:
    assert key_prefix("hk_live_short") == ""
    assert key_prefix("") == ""
