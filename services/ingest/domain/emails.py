"""email-validator, with its check of an address's domain remembered per domain.

Of the ~0.2 ms a lead's normalization costs, a third was `validate_email` checking the domain (IDNA and UTS-46
rules, character by character), for the same few thousand domains again and again (gmail.com, a company's own).
The check depends on the domain text and the options alone, so its answer is remembered; an invalid domain raises
and is checked afresh each time. The local part and the address's length are checked on every call, as before.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from email_validator import EmailNotValidError, ValidatedEmail, validate_email

DOMAINS_REMEMBERED = 4096

# `validate_email` looks the domain check up in its own module at each call (the package's `validate_email` name is
# the function, so the module is taken from the import system).
_module: Any = importlib.import_module("email_validator.validate_email")
if not hasattr(_module.validate_email_domain_name, "cache_info"):
    _module.validate_email_domain_name = functools.lru_cache(maxsize=DOMAINS_REMEMBERED)(
        _module.validate_email_domain_name
    )

__all__ = ["EmailNotValidError", "ValidatedEmail", "validate_email"]
