"""Phone facts derived offline from the number itself (libphonenumber metadata, no lookup service)."""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType

_LINE_TYPES: dict[int, str] = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
    PhoneNumberType.UNKNOWN: "unknown",
}
LINE_TYPES: tuple[str, ...] = (*dict.fromkeys(_LINE_TYPES.values()), "invalid")


def phone_facts(phone_e164: str | None) -> dict[str, str | None]:
    """{"country": ISO alpha-2, "line_type": "mobile"|"fixed_line"|...|"invalid"}; None values if absent."""
    if phone_e164 is None or not phone_e164.strip():
        return {"country": None, "line_type": None}
    try:
        number = phonenumbers.parse(phone_e164.strip(), None)
    except phonenumbers.NumberParseException:
        return {"country": None, "line_type": "invalid"}
    # A number is valid exactly when its type (for the region its digits belong to) is known: asking the type
    # alone answers both (`is_valid_number` worked the type out too, ~11 of a valid number's ~38 us).
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        return {"country": None, "line_type": "invalid"}
    region = phonenumbers.region_code_for_number(number)
    line_type = _LINE_TYPES.get(kind, "unknown")
    # "001" is libphonenumber's region for non-geographic numbers (e.g. +800 freephone).
    country = region if region and region.isalpha() and region != "ZZ" else None
    return {"country": country, "line_type": line_type}
