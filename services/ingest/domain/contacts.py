"""Reading the ways to reach a person and where they are: phone numbers, countries, languages, URLs, yes/no."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import phonenumbers
import pycountry

from ingest.domain.fields import is_blank
from ingest.domain.text import clean_line

_TRUTHY = frozenset({"true", "yes", "y", "1", "on", "checked", "accepted", "accept", "agree", "agreed",
                     "i agree", "opt-in", "opt_in", "ok", "x", "granted"})  # fmt: skip
_FALSY = frozenset({"false", "no", "n", "0", "off", "", "unchecked", "declined", "decline", "disagree",
                    "opt-out", "opt_out", "denied", "none", "null"})  # fmt: skip

# pycountry knows official and some common names; these are the everyday and native spellings
# that web forms actually send and that it does not.
_COUNTRY_ALIASES = {
    "uk": "GB", "u.k": "GB", "great britain": "GB", "britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB", "u.s": "US", "u.s.a": "US", "america": "US",
    "united states of america": "US", "russia": "RU", "turkey": "TR", "türkiye": "TR", "ivory coast": "CI",
    "cote d'ivoire": "CI", "cape verde": "CV", "macedonia": "MK", "holland": "NL", "the netherlands": "NL",
    "kosovo": "XK", "palestine": "PS", "micronesia": "FM", "korea": "KR", "republic of korea": "KR",
    "burma": "MM", "swaziland": "SZ", "vatican": "VA", "vatican city": "VA", "east timor": "TL",
    "uae": "AE", "deutschland": "DE", "brasil": "BR", "españa": "ES", "espana": "ES", "méxico": "MX",
    "schweiz": "CH", "suisse": "CH", "österreich": "AT", "italia": "IT", "nederland": "NL",
    "polska": "PL", "sverige": "SE", "norge": "NO", "danmark": "DK", "suomi": "FI", "россия": "RU",
    "中国": "CN", "日本": "JP", "대한민국": "KR", "한국": "KR", "भारत": "IN", "বাংলাদেশ": "BD",
    "ایران": "IR", "مصر": "EG", "السعودية": "SA", "الإمارات": "AE",
}  # fmt: skip
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# A national number with no country anywhere (lead, source) is read as NANP (+1) when it is valid there: the
# E.164 form is the same for the US, Canada and the Caribbean, so only the plan is assumed, and it is flagged.
FALLBACK_PHONE_REGION = "US"


def as_text(value: Any) -> str | None:
    """Scalar or list of scalars as text; None when the value is structured (a dict) or a bool."""
    if isinstance(value, str):  # first: the usual value, and an ABC check (Mapping) costs more than the rest
        return value
    if isinstance(value, bool | Mapping):
        return None
    if isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)
    if isinstance(value, list | tuple):
        parts = [as_text(v) for v in value if not is_blank(v)]
        if any(p is None for p in parts):
            return None
        return ", ".join(p for p in parts if p is not None)
    return None


def parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, list | tuple):
        # Checkbox groups and Meta answers arrive as lists; any checked box means consent.
        parsed = [parse_bool(v) for v in value]
        return None if any(p is None for p in parsed) else any(parsed)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUTHY:
            return True
        if text in _FALSY:
            return False
    if value is None:
        return False
    return None


@functools.lru_cache(maxsize=1024)
def lookup_country(value: str) -> str | None:
    """Country name or ISO code (alpha-2, alpha-3, numeric) -> ISO 3166-1 alpha-2, or None."""
    text = value.strip()
    key = text.lower().rstrip(".")
    if key in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[key]
    if key.startswith("the "):
        key = key[4:]
    try:
        return str(pycountry.countries.lookup(key).alpha_2)
    except LookupError:
        pass
    # "Korea, Republic of" style names sometimes arrive reversed or with "Republic of" prefixes.
    for country in pycountry.countries:
        if key in (getattr(country, "common_name", "").lower(), country.name.lower().split(",")[0]):
            return str(country.alpha_2)
    return None


def parse_phone(text: str, region: str | None) -> phonenumbers.PhoneNumber | str:
    """A valid phone number, or the reason it is not one (``region`` is the ISO country to assume)."""
    reason = f"not a valid phone number for {region}" if region else "not a valid phone number"
    try:
        number = phonenumbers.parse(text, region)
        if phonenumbers.is_valid_number(number):
            return number
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            reason = "no country code: start with + or give a country"
        else:
            reason = "not a phone number"
    # Platforms (Webflow sends JSON numbers) and people drop the leading "+" of international
    # numbers: retry long digit-only input as international, but never reinterpret a national
    # number with a trunk "0", and keep it only if it validates.
    digits = re.sub(r"[\s\-().]", "", text)
    if digits.isdigit() and len(digits) >= 10 and not digits.startswith("0"):
        try:
            number = phonenumbers.parse("+" + digits, None)
        except phonenumbers.NumberParseException:
            return reason
        if phonenumbers.is_valid_number(number):
            return number
    return reason


@functools.lru_cache(maxsize=512)
def normalize_language(value: str) -> str | None:
    if _LANGUAGE_TAG.match(value):
        parts = re.split(r"[-_]", value)
        primary = parts[0].lower()
        known = (
            pycountry.languages.get(alpha_2=primary) if len(primary) == 2 else pycountry.languages.get(alpha_3=primary)
        )
        if known is None:
            return None
        rest = [p.upper() if len(p) == 2 else p.title() if len(p) == 4 else p.lower() for p in parts[1:]]
        return "-".join([primary, *rest])
    try:
        language = pycountry.languages.lookup(value.strip())
    except LookupError:
        return None
    return str(getattr(language, "alpha_2", None) or language.alpha_3)


def normalize_url(value: str) -> str:
    """Add ``https://`` when the scheme is missing and lower-case the host; ValueError if not http(s)."""
    text = clean_line(value)
    if not text or any(ch.isspace() for ch in text):
        raise ValueError("not a URL")
    if not _SCHEME.match(text):
        text = "https://" + text.lstrip("/")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("must be an http or https URL")
    host = parts.hostname
    port = parts.port  # raises ValueError for a non-numeric port
    if not host or ("." not in host and host != "localhost" and ":" not in host):
        raise ValueError("has no valid host name")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    # Credentials in a submitted URL are never useful to sales and must not be stored.
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
