"""One lead model for every source, and the function that turns any raw submission into it.

The rooms: `fields` (which key is which field), `contacts`, `names`, `dates` and `quality` (reading values),
`model` (NormalizedLead) and `normalizer` (the steps); this module is the entry point and re-exports the names
other modules use.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import phonenumbers

from ingest.domain.contacts import lookup_country, normalize_url, parse_phone
from ingest.domain.dates import parse_datetime
from ingest.domain.emails import EmailNotValidError, validate_email
from ingest.domain.errors import FieldError, LeadValidationError
from ingest.domain.fields import CLICK_ID_KEYS, TEXT_FIELDS, UTM_KEYS, collect
from ingest.domain.model import NormalizedLead
from ingest.domain.normalizer import Normalizer

__all__ = [
    "CLICK_ID_KEYS",
    "TEXT_FIELDS",
    "UTM_KEYS",
    "NormalizedLead",
    "lookup_country",
    "normalize_lead",
    "normalize_url",
    "parse_datetime",
    "parse_phone",
    "subject_identity_keys",
]


def normalize_lead(
    raw: Mapping[str, Any],
    *,
    default_region: str | None = None,
    field_mapping: Mapping[str, str] | None = None,
    now: datetime,
    strict: bool = True,
    require_contact: bool = True,
) -> NormalizedLead:
    """Validate and normalize one raw submission: keep what can be read, flag what cannot.

    A value that is no phone, no email, no known country or language, no URL, no date, or a date in the future
    (clamped to `now`) is kept raw in ``quality.raw`` and named in ``quality.flags``; the lead is accepted.
    Raises LeadValidationError for malformed input (wrong types, over-long text, too many custom fields) and,
    when ``require_contact``, NotALead if no usable email or phone is left (a platform's lead id is the way to
    reach the person otherwise: pass ``require_contact=False``, and the lead is flagged ``no_contact``).

    ``field_mapping`` (the source's own key -> our field, ``utm.source``, ``consent.x``,
    ``click_ids.x`` or ``custom.x``; "" drops the key) is applied before the built-in aliases.
    ``strict=False`` is for platform leads, which nobody can correct and resend: malformed fields are flagged
    as ``<field>_invalid`` and over-long custom values are cut instead of refusing the lead.
    """
    if not isinstance(raw, Mapping):
        raise LeadValidationError([FieldError("body", "expected a JSON object")])
    return Normalizer(collect(raw, field_mapping), default_region, now, strict, require_contact).run()


def subject_identity_keys(email: str | None, phone: str | None, region: str | None = None) -> list[str]:
    """The identity keys of a person asking about their data, normalized as a lead's are (see `identity_keys`);
    raises LeadValidationError naming the field that is not an email or a phone number."""
    keys: list[str] = []
    errors: list[FieldError] = []
    if email:
        try:
            normalized = validate_email(email.strip(), check_deliverability=False).normalized
            keys.append(f"email:{normalized.lower()}")
        except EmailNotValidError as exc:
            errors.append(FieldError("email", str(exc)))
    if phone:
        parsed = parse_phone(phone.strip(), region)
        if isinstance(parsed, str):
            errors.append(FieldError("phone", parsed))
        else:
            keys.append(f"phone:{phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)}")
    if not (email or phone):
        errors.append(FieldError("email", "email or phone is required"))
    if errors:
        raise LeadValidationError(errors)
    return keys
