"""Remembering email-validator's domain check per domain changes no answer: the same address is valid or invalid,
with the same normalized form or the same reason, whether its domain was checked before or not."""

from __future__ import annotations

import importlib

import pytest

from ingest.domain.emails import EmailNotValidError, normalized_email, validate_email

ADDRESSES = [
    "ada@example.com",
    "Ada.Lovelace+leads@Example.COM",
    "grace@EXAMPLE.com",
    "someone@bücher.de",
    "someone@xn--bcher-kva.de",
    "postmaster@example.com",
    "x@localhost",
    "x@example.test",
    "x@example.invalid",
    "x@-bad-.com",
    "x@bad..com",
    "x@123",
    "x@" + "a" * 64 + ".com",
    "a" * 250 + "@example.com",
    "no-at-sign.example.com",
    "two@@example.com",
    "x@exa mple.com",
]


def _answer(address: str) -> str:
    try:
        return "valid: " + validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return f"invalid: {exc}"


@pytest.mark.parametrize("address", ADDRESSES)
def test_an_address_gets_the_libraries_own_answer_before_and_after_its_domain_is_remembered(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module("email_validator.validate_email")
    remembered = module.validate_email_domain_name
    first, second = _answer(address), _answer(address)
    monkeypatch.setattr(module, "validate_email_domain_name", remembered.__wrapped__)
    assert first == second == _answer(address)


def test_a_domain_is_checked_once_and_an_invalid_one_each_time() -> None:
    remembered = importlib.import_module("email_validator.validate_email").validate_email_domain_name
    for _ in range(3):
        validate_email("a@remembered-once.example.org", check_deliverability=False)
        with pytest.raises(EmailNotValidError):
            validate_email("a@never-.example.org", check_deliverability=False)
    hits = remembered.cache_info().hits
    validate_email("b@remembered-once.example.org", check_deliverability=False)
    assert remembered.cache_info().hits == hits + 1


PLAIN_AND_ODD = [
    *ADDRESSES,
    "A@EXAMPLE.COM",
    "Abuse@Example.com",
    "x@example.com.",
    ".x@example.com",
    "x.@example.com",
    "x..y@example.com",
    "user%tag{1}|~@sub.example.co.uk",
    "x@1.2.3.4",
    "x@[192.0.2.1]",
    "x@123.com",
    "x@example.c0m",
    "x@EXAMPLE.LOCAL",
    "x@example.onion",
    "x@a",
    "x@",
    "@example.com",
    "Ada <ada@example.com>",
    '"quoted"@example.com',
    "jörg@example.com",
    "x@example.com\n",
    "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com",  # 254 characters
    "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com",  # 255
    "a" * 65 + "@example.com",
    "x@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".xn--bcher-kva",
]


def _normalized_answer(address: str) -> str:
    try:
        return "valid: " + normalized_email(address)
    except EmailNotValidError as exc:
        return f"invalid: {exc}"


@pytest.mark.parametrize("address", PLAIN_AND_ODD)
def test_the_plain_address_shortcut_gives_the_libraries_own_answer(address: str) -> None:
    assert _normalized_answer(address) == _answer(address)
