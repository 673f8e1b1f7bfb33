"""Which of our fields each key of a raw submission is: the names, aliases and limits, and the collection step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.domain.errors import FieldError
from ingest.domain.text import key_slug

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


@dataclass(slots=True)
class Candidate:
    rank: int
    key: str
    value: Any


@dataclass(slots=True)
class Collected:
    fields: dict[str, list[Candidate]] = field(default_factory=dict)
    utm: dict[str, Any] = field(default_factory=dict)
    click_ids: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)

    def add_field(self, name: str, rank: int, key: str, value: Any) -> None:
        if is_blank(value):
            return
        self.fields.setdefault(name, []).append(Candidate(rank, key, value))


def is_blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value in ([], {})


def route_target(collected: Collected, target: str, key: str, value: Any, rank: int) -> bool:
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
    return route_known(collected, slug, key, value, rank)


def route_known(collected: Collected, slug: str, key: str, value: Any, rank: int) -> bool:
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


def collect(raw: Mapping[str, Any], field_mapping: Mapping[str, str] | None) -> Collected:
    collected = Collected()
    mapping = dict(field_mapping or {})
    mapping_by_slug = {key_slug(k): v for k, v in mapping.items()}
    fields = collected.fields
    # Each key slugged once, taken in one pass; hidden fields (Typeform, landing-page scripts) carry UTMs and click
    # ids, treated like top-level keys after the visible ones so a typed answer wins.
    hidden: list[Mapping[Any, Any]] = []
    for key, value in raw.items():
        skey = key if type(key) is str else str(key)
        slug = key_slug(skey)
        if not mapping:
            known = _ALIAS_INDEX.get(slug)
            if known is not None:
                # route_known's first case, inlined: most keys of a lead are one of our fields' names.
                if not (value.strip() == "" if type(value) is str else is_blank(value)):
                    fields.setdefault(known[0], []).append(Candidate(known[1], skey, value))
                continue
        if slug == "hidden" and isinstance(value, Mapping):
            hidden.append(value)
            continue
        _collect_one(collected, mapping, mapping_by_slug, skey, slug, value)
    for value in hidden:
        for key, sub_value in value.items():
            skey = str(key)
            _collect_one(collected, mapping, mapping_by_slug, skey, key_slug(skey), sub_value)
    return collected


def _collect_one(
    collected: Collected,
    mapping: Mapping[str, str],
    mapping_by_slug: Mapping[str, str],
    key: str,
    slug: str,
    value: Any,
) -> None:
    """One key of a submission (a mapped one, or any but the usual field names) where its name says."""
    if mapping:
        target = mapping.get(key, mapping_by_slug.get(slug))
        if target is not None:
            if target == "":
                return  # an explicit "" mapping drops a key the source sends but we must not keep
            if not route_target(collected, target, key, value, rank=-100):
                collected.custom.setdefault(key, value)  # lenient mode keeps it; strict mode raises
                collected.errors.append(FieldError(f"field_mapping.{key}", f"unknown target field {target!r}"))
            return
    known = _ALIAS_INDEX.get(slug)
    if known is not None:
        if not (value.strip() == "" if type(value) is str else is_blank(value)):
            collected.fields.setdefault(known[0], []).append(Candidate(known[1], key, value))
        return
    if slug in _IGNORED_KEYS:
        return
    if slug in ("utm", "click_ids", "consent", "custom") and isinstance(value, Mapping):
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
        return
    if not route_known(collected, slug, key, value, rank=0):
        collected.custom[key] = value
