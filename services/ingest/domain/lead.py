"""One lead model for every source, and the function that turns any raw submission into it."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email

from ingest.domain.errors import FieldError, LeadValidationError, NotALead
from ingest.domain.text import clean_line, clean_multiline, is_cjk_text, key_slug

CustomValue = str | int | float | bool | None

TEXT_FIELDS = (
    "first_name", "last_name", "full_name", "email", "phone", "company", "job_title", "website",
    "country", "region", "city", "postal_code", "language", "message", "page_url", "referrer", "form_id",
)  # fmt: skip
UTM_KEYS = ("source", "medium", "campaign", "term", "content")
CLICK_ID_KEYS = (
    "gclid", "gbraid", "wbraid", "dclid", "fbclid", "fbc", "fbp", "li_fat_id", "msclkid", "ttclid",
    "twclid", "yclid", "rdt_cid", "sccid", "epik", "irclid",
)  # fmt: skip

MAX_CUSTOM_KEYS = 50
MAX_CUSTOM_KEY_LEN = 64
MAX_CUSTOM_VALUE_LEN = 1000
FUTURE_TOLERANCE = timedelta(minutes=5)

# Generous limits: long enough for real people and companies, short enough that a paste of a whole
# document into a name field is refused instead of being routed to a sales rep.
MAX_LEN: dict[str, int] = {
    "first_name": 100, "last_name": 100, "full_name": 200, "email": 254, "phone": 50, "company": 200,
    "job_title": 200, "website": 2048, "country": 100, "region": 100, "city": 100, "postal_code": 20,
    "language": 50, "message": 5000, "page_url": 2048, "referrer": 2048, "form_id": 200,
    "utm": 500, "click_ids": 500,
}  # fmt: skip

# Aliases in priority order: when a form sends two of them, the earlier one wins and a differing
# later one is kept in `custom` so nothing the person typed is lost.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name", "firstname", "given_name", "givenname", "fname", "first"),
    "last_name": ("last_name", "lastname", "surname", "family_name", "familyname", "lname", "last"),
    "full_name": ("full_name", "fullname", "name", "your_name", "contact_name"),
    "email": ("email", "email_address", "emailaddress", "e_mail", "mail", "work_email", "business_email"),
    "phone": (
        "phone", "phone_number", "phonenumber", "tel", "telephone", "mobile", "mobilephone",
        "mobile_phone", "mobile_number", "cell", "cell_phone", "work_phone", "work_phone_number",
    ),
    "company": ("company", "company_name", "companyname", "organization", "organisation", "org", "business"),
    "job_title": ("job_title", "jobtitle", "title", "position", "role"),
    "website": ("website", "web_site", "website_url", "company_website", "homepage", "url", "domain"),
    "country": ("country", "country_code", "countrycode", "country_name", "country_region"),
    "region": ("region", "state", "province", "state_province", "state_region", "county"),
    "city": ("city", "town", "locality"),
    "postal_code": ("postal_code", "postalcode", "zip", "zip_code", "zipcode", "postcode", "post_code"),
    "language": ("language", "lang", "locale", "hs_language", "preferred_language"),
    "message": ("message", "comments", "comment", "notes", "note", "inquiry", "enquiry"),
    "page_url": ("page_url", "pageurl", "landing_page", "landing_page_url", "source_url", "page_location"),
    "referrer": ("referrer", "referer", "http_referer", "referrer_url"),
    "form_id": ("form_id", "formid", "form_name"),
    "submitted_at": (
        "submitted_at", "submittedat", "submission_time", "created_time", "created_at", "lead_submit_time",
        "timestamp",
    ),
}  # fmt: skip
_ALIAS_INDEX: dict[str, tuple[str, int]] = {
    alias: (name, rank) for name, aliases in FIELD_ALIASES.items() for rank, alias in enumerate(aliases)
}
_CLICK_ALIASES = {"gcl_id": "gclid", "_fbc": "fbc", "_fbp": "fbp"}
_CONSENT_ALIASES = {
    "consent": "general",
    "gdpr": "gdpr",
    "opt_in": "marketing",
    "optin": "marketing",
    "marketing_opt_in": "marketing",
    "email_opt_in": "marketing",
    "newsletter": "marketing",
    "subscribe": "marketing",
    "accept_terms": "terms",
    "terms_accepted": "terms",
    "terms": "terms",
    "tos": "terms",
    "privacy_policy": "privacy",
}
# Anti-bot and CSRF tokens are long opaque blobs: keeping them would overflow `custom` limits and
# reject real leads, and they mean nothing to sales.
_IGNORED_KEYS = frozenset(
    {
        "g_recaptcha_response", "h_captcha_response", "cf_turnstile_response", "csrf_token",
        "csrfmiddlewaretoken", "_token", "authenticity_token",
    }
)  # fmt: skip
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
_NAME_PARTICLES = frozenset({"van", "von", "de", "da", "del", "della", "der", "den", "di", "du", "la", "le",
                             "ter", "ten", "bin", "binti", "ibn", "dos", "das", "do", "zu", "af", "av",
                             "st.", "bint", "بن", "ابن", "بنت"})  # fmt: skip
_NAME_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "esq"})
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

# Quality flags: what was kept but could not be read, one name per field and problem. The raw value sits in
# `quality.raw` under the field's path, so nothing the person typed is lost and a human can correct it.
SEMANTIC_FLAGS: dict[str, str] = {
    "email": "email_invalid",
    "phone": "phone_unparsed",
    "country": "country_unknown",
    "language": "language_unknown",
    "website": "website_invalid",
    "consent": "consent_unreadable",
}
# A national number with no country anywhere (lead, source) is read as NANP (+1) when it is valid there: the
# E.164 form is the same for the US, Canada and the Caribbean, so only the plan is assumed, and it is flagged.
FALLBACK_PHONE_REGION = "US"
MAX_RAW_LEN = 1000


@dataclass(frozen=True, kw_only=True)
class NormalizedLead:
    """A lead after validation and normalization, whatever platform it came from."""

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    email: str | None = None
    phone: str | None = None  # E.164
    company: str | None = None
    job_title: str | None = None
    website: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    language: str | None = None  # BCP 47-ish tag, e.g. "en" or "pt-BR"
    message: str | None = None
    consent: dict[str, bool] = field(default_factory=dict)
    utm: dict[str, str] = field(default_factory=dict)
    click_ids: dict[str, str] = field(default_factory=dict)
    page_url: str | None = None
    referrer: str | None = None
    form_id: str | None = None
    submitted_at: datetime | None = None
    custom: dict[str, CustomValue] = field(default_factory=dict)
    quality_flags: tuple[str, ...] = ()  # e.g. ("phone_unparsed", "submitted_at_clamped")
    quality_raw: dict[str, Any] = field(default_factory=dict)  # field path -> the unreadable value as sent

    @property
    def reachable(self) -> bool:
        """Whether the lead gives a usable way to reach the person (a valid email or phone)."""
        return bool(self.email or self.phone)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every key present (missing values are None, maps are {})."""
        out: dict[str, Any] = {name: getattr(self, name) for name in TEXT_FIELDS}
        out["consent"] = dict(self.consent)
        out["utm"] = dict(self.utm)
        out["click_ids"] = dict(self.click_ids)
        out["submitted_at"] = self.submitted_at.isoformat() if self.submitted_at else None
        out["custom"] = dict(self.custom)
        out["quality"] = {"flags": list(self.quality_flags), "raw": dict(self.quality_raw)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormalizedLead:
        """Rebuild a lead from `to_dict` output (e.g. a stored row); performs no validation."""
        submitted = data.get("submitted_at")
        quality = data.get("quality") or {}
        return cls(
            **{name: data.get(name) for name in TEXT_FIELDS},
            consent=dict(data.get("consent") or {}),
            utm=dict(data.get("utm") or {}),
            click_ids=dict(data.get("click_ids") or {}),
            submitted_at=datetime.fromisoformat(submitted) if isinstance(submitted, str) else submitted,
            custom=dict(data.get("custom") or {}),
            quality_flags=tuple(quality.get("flags") or ()),
            quality_raw=dict(quality.get("raw") or {}),
        )

    def identity_keys(self) -> list[str]:
        """Keys naming the same person across submissions: ``email:<lower-case>``, ``phone:<e164>``."""
        keys = []
        if self.email:
            # Case-insensitive in practice everywhere; sub-addressing (+tag) is left alone because
            # merging on it could join two different people at providers that do not support it.
            keys.append(f"email:{self.email.lower()}")
        if self.phone:
            keys.append(f"phone:{self.phone}")
        return keys


@dataclass
class _Candidate:
    rank: int
    key: str
    value: Any


@dataclass
class _Collected:
    fields: dict[str, list[_Candidate]] = field(default_factory=dict)
    utm: dict[str, Any] = field(default_factory=dict)
    click_ids: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)

    def add_field(self, name: str, rank: int, key: str, value: Any) -> None:
        if _is_blank(value):
            return
        self.fields.setdefault(name, []).append(_Candidate(rank, key, value))


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def _route_target(collected: _Collected, target: str, key: str, value: Any, rank: int) -> bool:
    """Put ``value`` where the target name says; False when the target names nothing we know."""
    slug = key_slug(target)
    if slug in FIELD_ALIASES:
        collected.add_field(slug, rank, key, value)
        return True
    prefix, _, rest = target.partition(".")
    if prefix == "custom" and rest:
        collected.custom[rest] = value
        return True
    if prefix == "utm" and rest in UTM_KEYS:
        collected.utm[rest] = value
        return True
    if prefix == "consent" and rest:
        collected.consent[key_slug(rest)] = value
        return True
    if prefix == "click_ids" and rest:
        collected.click_ids[key_slug(rest)] = value
        return True
    return _route_known(collected, slug, key, value, rank)


def _route_known(collected: _Collected, slug: str, key: str, value: Any, rank: int) -> bool:
    if slug in _ALIAS_INDEX:
        name, alias_rank = _ALIAS_INDEX[slug]
        collected.add_field(name, rank + alias_rank, key, value)
        return True
    if slug.startswith("utm_") and slug[4:] in UTM_KEYS:
        collected.utm.setdefault(slug[4:], value)
        return True
    if slug in CLICK_ID_KEYS or slug in _CLICK_ALIASES:
        collected.click_ids.setdefault(_CLICK_ALIASES.get(slug, slug), value)
        return True
    if slug in _CONSENT_ALIASES:
        collected.consent.setdefault(_CONSENT_ALIASES[slug], value)
        return True
    if slug.startswith("consent_") or slug.endswith("_consent"):
        name = slug.removeprefix("consent_").removesuffix("_consent")
        collected.consent.setdefault(name, value)
        return True
    return False


def _collect(raw: Mapping[str, Any], field_mapping: Mapping[str, str] | None) -> _Collected:
    collected = _Collected()
    mapping = dict(field_mapping or {})
    mapping_by_slug = {key_slug(k): v for k, v in mapping.items()}
    items: list[tuple[str, Any]] = []
    for key, value in raw.items():
        skey = str(key)
        if key_slug(skey) == "hidden" and isinstance(value, Mapping):
            # Hidden fields (Typeform, landing-page scripts) carry UTMs and click ids: treat them
            # like top-level keys, after the visible ones so a typed answer wins.
            continue
        items.append((skey, value))
    for key, value in raw.items():
        if key_slug(str(key)) == "hidden" and isinstance(value, Mapping):
            items.extend((str(k), v) for k, v in value.items())

    for key, value in items:
        slug = key_slug(key)
        target = mapping.get(key, mapping_by_slug.get(slug))
        if target is not None:
            if target == "":
                continue  # an explicit "" mapping drops a key the source sends but we must not keep
            if not _route_target(collected, target, key, value, rank=-100):
                collected.custom.setdefault(key, value)  # lenient mode keeps it; strict mode raises
                collected.errors.append(
                    FieldError(f"field_mapping.{key}", f"unknown target field {target!r}")
                )
            continue
        if slug in _IGNORED_KEYS:
            continue
        if isinstance(value, Mapping) and slug in ("utm", "click_ids", "consent", "custom"):
            for sub_key, sub_value in value.items():
                sk = str(sub_key)
                if slug == "utm":
                    name = key_slug(sk).removeprefix("utm_")
                    if name in UTM_KEYS:
                        collected.utm[name] = sub_value
                    else:
                        collected.custom[f"utm_{name}"] = sub_value
                elif slug == "click_ids":
                    csk = key_slug(sk)
                    collected.click_ids[_CLICK_ALIASES.get(csk, csk)] = sub_value
                elif slug == "consent":
                    collected.consent[key_slug(sk)] = sub_value
                else:
                    collected.custom[sk] = sub_value
            continue
        if not _route_known(collected, slug, key, value, rank=0):
            collected.custom[key] = value
    return collected


def _as_text(value: Any) -> str | None:
    """Scalar or list of scalars as text; None when the value is structured (a dict) or a bool."""
    if isinstance(value, bool | Mapping):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)
    if isinstance(value, list | tuple):
        parts = [_as_text(v) for v in value if not _is_blank(v)]
        if any(p is None for p in parts):
            return None
        return ", ".join(p for p in parts if p is not None)
    return None


def _parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, list | tuple):
        # Checkbox groups and Meta answers arrive as lists; any checked box means consent.
        parsed = [_parse_bool(v) for v in value]
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


def parse_datetime(value: Any) -> datetime:
    """ISO 8601 string, Unix seconds/milliseconds or datetime -> aware UTC datetime (naive means UTC)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, bool):
        raise ValueError("not a date-time")
    elif isinstance(value, int | float) or (
        isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip())
    ):
        seconds = float(value)
        # Platforms disagree on units; anything past year ~5000 in seconds is really milliseconds.
        if seconds > 1e11:
            seconds /= 1000
        dt = datetime.fromtimestamp(seconds, tz=UTC)
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value.strip())
    else:
        raise ValueError("not a date-time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


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
def _normalize_language(value: str) -> str | None:
    if _LANGUAGE_TAG.match(value):
        parts = re.split(r"[-_]", value)
        primary = parts[0].lower()
        known = (
            pycountry.languages.get(alpha_2=primary)
            if len(primary) == 2
            else pycountry.languages.get(alpha_3=primary)
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


def _split_full_name(full: str) -> tuple[str | None, str | None]:
    tokens = full.split()
    if not tokens:
        return None, None
    if is_cjk_text(full):
        # Chinese, Japanese and Korean names are family-name first; without a space we cannot tell
        # where the family name ends, so only the full name is kept.
        if len(tokens) == 1:
            return None, None
        return " ".join(tokens[1:]), tokens[0]
    if full.count(",") == 1:
        last, _, first = full.partition(",")
        if first.strip() and last.strip() and first.strip().lower().rstrip(".") not in _NAME_SUFFIXES:
            return first.strip(), last.strip()
    if len(tokens) == 1:
        return tokens[0], None
    end = len(tokens)
    while end > 2 and tokens[end - 1].lower().strip(".,") in _NAME_SUFFIXES:
        end -= 1
    start = end - 1
    while start > 1 and tokens[start - 1].lower() in _NAME_PARTICLES:
        start -= 1
    return " ".join(tokens[:start]), " ".join(tokens[start:])


def _join_name(first: str | None, last: str | None) -> str | None:
    if first and last:
        if is_cjk_text(first) and is_cjk_text(last):
            return last + first
        return f"{first} {last}"
    return first or last


class _Normalizer:
    def __init__(
        self, collected: _Collected, default_region: str | None, now: datetime, strict: bool, require_contact: bool
    ) -> None:
        self.c = collected
        self.errors = collected.errors
        self.default_region = default_region
        self.now = now if now.tzinfo else now.replace(tzinfo=UTC)
        self.strict = strict
        self.require_contact = require_contact
        self.custom: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self.flags: list[str] = []
        self.raw: dict[str, Any] = {}  # field path -> the value as sent
        self.reasons: dict[str, str] = {}  # field path -> why it was flagged (for a refusal that names them)

    def flag(self, field_path: str, flag: str, sent: Any, reason: str | None = None) -> None:
        """Keep the lead, note the problem: the raw value goes to quality.raw under its path."""
        if flag not in self.flags:
            self.flags.append(flag)
        if sent is not None:
            self.raw.setdefault(field_path, _raw_value(sent))
        if reason:
            self.reasons.setdefault(field_path, reason)

    def fail(self, field_path: str, reason: str, sent: Any, *, malformed: bool = False) -> None:
        """A value that cannot be read. Semantic problems (a phone that is no number) are always flagged; malformed
        input (an object where text belongs, a document pasted into a name) refuses a web lead, which its sender can
        correct, and is flagged on a platform lead, which nobody can.
        """
        root = field_path.split(".")[0]
        if root in SEMANTIC_FLAGS and not malformed:
            self.flag(field_path, SEMANTIC_FLAGS[root], sent, reason)
        elif self.strict:
            self.errors.append(FieldError(field_path, reason))
        else:
            self.flag(field_path, f"{root}_invalid", sent, reason)

    def pick(self, name: str) -> tuple[str, Any] | None:
        candidates = sorted(self.c.fields.get(name, []), key=lambda cand: cand.rank)
        if not candidates:
            return None
        chosen = candidates[0]
        for other in candidates[1:]:
            if other.value != chosen.value:
                self.custom.setdefault(other.key, other.value)
        return chosen.key, chosen.value

    def text(self, name: str, *, multiline: bool = False) -> str | None:
        picked = self.pick(name)
        if picked is None:
            return None
        text = _as_text(picked[1])
        if text is None:
            self.fail(name, "expected text", picked[1], malformed=True)
            return None
        cleaned = clean_multiline(text) if multiline else clean_line(text)
        if len(cleaned) > MAX_LEN[name]:
            self.fail(name, f"longer than {MAX_LEN[name]} characters", cleaned, malformed=True)
            return None
        return cleaned or None

    def run(self) -> NormalizedLead:
        v = self.values
        for name in ("first_name", "last_name", "full_name", "company", "job_title", "region", "city",
                     "postal_code", "form_id", "page_url", "referrer"):  # fmt: skip
            v[name] = self.text(name)
        v["message"] = self.text("message", multiline=True)
        self._names()
        self._country()
        self._email()
        self._phone()
        self._website()
        self._language()
        utm = self._string_map("utm", self.c.utm)
        click_ids = self._string_map("click_ids", self.c.click_ids)
        self._from_page_url(utm, click_ids)
        consent = self._consent()
        submitted_at = self._submitted_at()
        custom = self._custom()
        if not self.strict:
            # Platform leads cannot be corrected and resent: what could not be read is flagged above, and what is
            # left (a source's own field_mapping typo, a custom value that is not a finite number) is dropped.
            self.errors.clear()
        if self.errors:
            raise LeadValidationError(self.errors)
        if not (v.get("email") or v.get("phone")):
            if self.require_contact:
                named = [FieldError(path, self.reasons[path]) for path in ("email", "phone") if path in self.reasons]
                raise NotALead(named or [FieldError("email", "email or phone is required")])
            self.flag("", "no_contact", None)
        return NormalizedLead(
            **{name: v.get(name) for name in TEXT_FIELDS},
            consent=consent,
            utm=utm,
            click_ids=click_ids,
            submitted_at=submitted_at,
            custom=custom,
            quality_flags=tuple(self.flags),
            quality_raw=self.raw,
        )

    def _names(self) -> None:
        v = self.values
        if v["full_name"] and not v["first_name"] and not v["last_name"]:
            v["first_name"], v["last_name"] = _split_full_name(v["full_name"])
        elif not v["full_name"]:
            v["full_name"] = _join_name(v["first_name"], v["last_name"])

    def _country(self) -> None:
        text = self.text("country")
        if text is None:
            return
        code = lookup_country(text)
        if code is None:
            self.fail("country", f"unknown country {text!r}", text)
        self.values["country"] = code

    def _email(self) -> None:
        text = self.text("email")
        if text is None:
            return
        try:
            # No DNS: this runs on the request path and must stay pure; deliverability is scoring's job.
            result = validate_email(text, check_deliverability=False)
        except EmailNotValidError as exc:
            self.fail("email", str(exc), text)
            return
        self.values["email"] = result.normalized

    def _phone(self) -> None:
        text = self.text("phone")
        if text is None:
            return
        region = self.values.get("country") or (self.default_region.upper() if self.default_region else None)
        parsed = parse_phone(text, region)
        if isinstance(parsed, str) and region is None:
            fallback = parse_phone(text, FALLBACK_PHONE_REGION)
            if not isinstance(fallback, str):
                parsed = fallback
                self.flag("phone", "phone_region_assumed", text)
        if isinstance(parsed, str):
            self.fail("phone", parsed, text)
            return
        self.values["phone"] = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        if parsed.extension:
            self.custom.setdefault("phone_extension", parsed.extension)

    def _website(self) -> None:
        text = self.text("website")
        if text is None:
            return
        try:
            self.values["website"] = normalize_url(text)
        except ValueError as exc:
            self.fail("website", str(exc), text)

    def _language(self) -> None:
        text = self.text("language")
        if text is None:
            return
        tag = _normalize_language(text)
        if tag is None:
            self.fail("language", f"unknown language {text!r}", text)
        self.values["language"] = tag

    def _string_map(self, prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in values.items():
            if _is_blank(value):
                continue
            text = _as_text(value)
            path = f"{prefix}.{key}"
            if text is None:
                self.fail(path, "expected text", value)
                continue
            text = clean_line(text)
            if len(text) > MAX_LEN[prefix]:
                self.fail(path, f"longer than {MAX_LEN[prefix]} characters", text)
                continue
            if text:
                out[key] = text
        return out

    def _from_page_url(self, utm: dict[str, str], click_ids: dict[str, str]) -> None:
        """Fill UTMs and click ids the form did not send from the landing page's query string."""
        page_url = self.values.get("page_url")
        if not page_url or "?" not in page_url:
            return
        for key, value in parse_qsl(urlsplit(page_url).query):
            slug = key_slug(key)
            if slug.startswith("utm_") and slug[4:] in UTM_KEYS and value:
                utm.setdefault(slug[4:], clean_line(value)[: MAX_LEN["utm"]])
            elif slug in CLICK_ID_KEYS and value:
                click_ids.setdefault(slug, clean_line(value)[: MAX_LEN["click_ids"]])

    def _consent(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for key, value in self.c.consent.items():
            parsed = _parse_bool(value)
            if parsed is None:
                self.fail(f"consent.{key}", "not a yes/no value", value)
            else:
                out[key] = parsed
        return out

    def _submitted_at(self) -> datetime | None:
        picked = self.pick("submitted_at")
        if picked is None:
            return None
        try:
            when = parse_datetime(picked[1])
        except (ValueError, OverflowError, OSError):
            self.flag("submitted_at", "submitted_at_unparsed", picked[1], "not an ISO 8601 date-time or Unix timestamp")
            return None
        if when > self.now + FUTURE_TOLERANCE:
            # A visitor's clock running ahead is no reason to lose the lead: it was submitted by now at the latest.
            self.flag("submitted_at", "submitted_at_clamped", picked[1], "is in the future")
            return self.now
        return when

    def _custom(self) -> dict[str, CustomValue]:
        merged = {**self.c.custom, **{k: v for k, v in self.custom.items() if k not in self.c.custom}}
        out: dict[str, CustomValue] = {}
        for raw_key, value in merged.items():
            key = clean_line(str(raw_key))
            if not key:
                continue
            if len(key) > MAX_CUSTOM_KEY_LEN:
                if self.strict:
                    self.errors.append(
                        FieldError(
                            f"custom.{key[:MAX_CUSTOM_KEY_LEN]}",
                            f"key longer than {MAX_CUSTOM_KEY_LEN} characters",
                        )
                    )
                    continue
                key = key[:MAX_CUSTOM_KEY_LEN]
            converted = _custom_value(value, truncate=not self.strict)
            if isinstance(converted, FieldError):
                self.errors.append(FieldError(f"custom.{key}", converted.reason))
                continue
            if len(out) == MAX_CUSTOM_KEYS and not self.strict:
                break  # lenient: keep the first 50, in the order the source sent them
            out[key] = converted
        if len(out) > MAX_CUSTOM_KEYS:
            self.errors.append(
                FieldError("custom", f"at most {MAX_CUSTOM_KEYS} custom fields, got {len(out)}")
            )
        return out


def _raw_value(value: Any) -> CustomValue:
    """An unreadable value as sent, bounded like a custom value so a pasted document cannot bloat every event."""
    kept = _custom_value(value, truncate=True)
    return None if isinstance(kept, FieldError) else kept


def _custom_value(value: Any, *, truncate: bool) -> CustomValue | FieldError:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else FieldError("", "not a finite number")
    if isinstance(value, datetime):
        value = value.isoformat()
    text = _as_text(value)
    if text is None:
        # Nested objects are kept as compact JSON text so nothing is dropped, within the same limit.
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str, separators=(",", ":"))
        except (TypeError, ValueError):
            return FieldError("", "unsupported value")
    text = clean_multiline(text)
    if len(text) > MAX_CUSTOM_VALUE_LEN:
        if not truncate:
            return FieldError("", f"value longer than {MAX_CUSTOM_VALUE_LEN} characters")
        text = text[:MAX_CUSTOM_VALUE_LEN]
    return text


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
    return _Normalizer(_collect(raw, field_mapping), default_region, now, strict, require_contact).run()


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
