"""email-validator, with its check of an address's domain remembered per domain.

Of the ~0.2 ms a lead's normalization costs, a third was `validate_email` checking the domain (IDNA and UTS-46
rules, character by character), for the same few thousand domains again and again (gmail.com, a company's own).
The check depends on the domain text and the options alone, so its answer is remembered; an invalid domain raises
and is checked afresh each time. The local part and the address's length are checked on every call, as before.

`normalized_email` is what a lead's email becomes. Nearly every address sent is plain ASCII (a dot-atom before the
@-sign, letters, digits, dots and hyphens after it); for those it takes the library's own steps for such an address
(the dot-atom is the local part as is, the role names it lower-cases, its domain check, its length limit) without
the general parser, about half the library's cost. Anything else, and any address over the length limit, goes
through `validate_email` whole; a test holds the two to the same answers.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any

import email_validator
from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from email_validator.rfc_constants import ATEXT, CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH

DOMAINS_REMEMBERED = 4096

# `validate_email` looks the domain check up in its own module at each call (the package's `validate_email` name is
# the function, so the module is taken from the import system).
_module: Any = importlib.import_module("email_validator.validate_email")
if not hasattr(_module.validate_email_domain_name, "cache_info"):
    _module.validate_email_domain_name = functools.lru_cache(maxsize=DOMAINS_REMEMBERED)(
        _module.validate_email_domain_name
    )

__all__ = ["EmailNotValidError", "ValidatedEmail", "normalized_email", "validate_email"]

_PLAIN = re.compile(r"([" + ATEXT + r"]+(?:\.[" + ATEXT + r"]+)*)@([A-Za-z0-9.-]+)\Z")
_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def normalized_email(text: str) -> str:
    """`validate_email(text, check_deliverability=False).normalized` (no DNS); raises its EmailNotValidError."""
    plain = _PLAIN.match(text)
    if plain is None:
        return validate_email(text, check_deliverability=False).normalized
    local, domain_part = plain.groups()
    if local.lower() in _ROLE_NAMES:
        local = local.lower()  # postmaster, abuse, ...: the library lower-cases these
    domain = _module.validate_email_domain_name(
        domain_part,
        test_environment=email_validator.TEST_ENVIRONMENT,
        globally_deliverable=email_validator.GLOBALLY_DELIVERABLE,
    )
    normalized = local + "@" + domain["domain"]
    ascii_length = len(local) + 1 + len(domain["ascii_domain"])
    if max(len(text), len(normalized.encode()), ascii_length) > EMAIL_MAX_LENGTH:
        return validate_email(text, check_deliverability=False).normalized  # raises, with its own reason
    return normalized
