"""The normalization of one raw submission into a NormalizedLead: keep what can be read, flag what cannot."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import phonenumbers

from ingest.domain.contacts import (
    FALLBACK_PHONE_REGION,
    as_text,
    lookup_country,
    normalize_language,
    normalize_url,
    parse_bool,
    parse_phone,
)
from ingest.domain.dates import FUTURE_TOLERANCE, parse_datetime
from ingest.domain.emails import EmailNotValidError, normalized_email
from ingest.domain.errors import FieldError, LeadValidationError, NotALead
from ingest.domain.fields import (
    CLICK_ID_KEYS,
    MAX_CUSTOM_KEY_LEN,
    MAX_CUSTOM_KEYS,
    MAX_LEN,
    TEXT_FIELDS,
    UTM_KEYS,
    Collected,
    CustomValue,
    is_blank,
)
from ingest.domain.model import NormalizedLead
from ingest.domain.names import join_name, split_full_name
from ingest.domain.quality import SEMANTIC_FLAGS, custom_value, raw_value
from ingest.domain.text import clean_line, clean_multiline, key_slug, needs_cleaning


class Normalizer:
    """One submission's normalization: `run` reads each field in turn, flagging or refusing what it cannot."""

    def __init__(
        self, collected: Collected, default_region: str | None, now: datetime, strict: bool, require_contact: bool
    ) -> None:
        self.c = collected
        self.errors = collected.errors
        self.default_region = default_region
        self.now = now if now.tzinfo else now.replace(tzinfo=UTC)
        self.strict = strict
        self.require_contact = require_contact
        self.custom: dict[str, Any] = {}
        self.values: dict[str, Any] = dict.fromkeys(TEXT_FIELDS)
        self.flags: list[str] = []
        self.raw: dict[str, Any] = {}  # field path -> the value as sent
        self.reasons: dict[str, str] = {}  # field path -> why it was flagged (for a refusal that names them)

    def flag(self, field_path: str, flag: str, sent: Any, reason: str | None = None) -> None:
        """Keep the lead, note the problem: the raw value goes to quality.raw under its path."""
        if flag not in self.flags:
            self.flags.append(flag)
        if sent is not None:
            self.raw.setdefault(field_path, raw_value(sent))
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
        candidates = self.c.fields.get(name)
        if not candidates:
            return None  # most of the fields asked for are absent: nothing to sort
        if len(candidates) == 1:
            only = candidates[0]
            return only.key, only.value
        if len(candidates) > 1:
            candidates = sorted(candidates, key=lambda cand: cand.rank)
        chosen = candidates[0]
        for other in candidates[1:]:
            if other.value != chosen.value:
                self.custom.setdefault(other.key, other.value)
        return chosen.key, chosen.value

    def text(self, name: str, *, multiline: bool = False) -> str | None:
        candidates = self.c.fields.get(name)
        if candidates is not None and len(candidates) == 1 and not multiline:
            # The usual field: sent once, as text that needs no cleaning (clean_line's own first test), in limit.
            value = candidates[0].value
            if type(value) is str and not needs_cleaning(value):
                value = value.strip()
                if len(value) <= MAX_LEN[name]:
                    return value or None
        picked = self.pick(name)
        if picked is None:
            return None
        text = as_text(picked[1])
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
        # Only the fields sent are read: a lead carries a handful of the names asked for here (the rest stay None).
        sent = self.c.fields
        for name in _PLAIN_TEXT:
            if name in sent:
                v[name] = self.text(name)
        if "message" in sent:
            v["message"] = self.text("message", multiline=True)
        self._names()
        for name, read in _READERS:
            if name in sent:
                read(self)
        c = self.c
        utm = self._string_map("utm", c.utm) if c.utm else {}
        click_ids = self._string_map("click_ids", c.click_ids) if c.click_ids else {}
        self._from_page_url(utm, click_ids)
        consent = self._consent() if c.consent else {}
        submitted_at = self._submitted_at() if "submitted_at" in sent else None
        custom = self._custom() if c.custom or self.custom else {}
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
        values = v  # every text field, None unless read: the lead's values from here
        values["consent"] = consent
        values["utm"] = utm
        values["click_ids"] = click_ids
        values["submitted_at"] = submitted_at
        values["custom"] = custom
        values["quality_flags"] = tuple(self.flags)
        values["quality_raw"] = self.raw
        return NormalizedLead.of_values(values)

    def _names(self) -> None:
        v = self.values
        if v["full_name"] and not v["first_name"] and not v["last_name"]:
            v["first_name"], v["last_name"] = split_full_name(v["full_name"])
        elif not v["full_name"]:
            v["full_name"] = join_name(v["first_name"], v["last_name"])

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
            normalized = normalized_email(text)
        except EmailNotValidError as exc:
            self.fail("email", str(exc), text)
            return
        self.values["email"] = normalized

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
        tag = normalize_language(text)
        if tag is None:
            self.fail("language", f"unknown language {text!r}", text)
        self.values["language"] = tag

    def _string_map(self, prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in values.items():
            if is_blank(value):
                continue
            text = as_text(value)
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
            parsed = parse_bool(value)
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
            converted = custom_value(value, truncate=not self.strict)
            if isinstance(converted, FieldError):
                self.errors.append(FieldError(f"custom.{key}", converted.reason))
                continue
            if len(out) == MAX_CUSTOM_KEYS and not self.strict:
                break  # lenient: keep the first 50, in the order the source sent them
            out[key] = converted
        if len(out) > MAX_CUSTOM_KEYS:
            self.errors.append(FieldError("custom", f"at most {MAX_CUSTOM_KEYS} custom fields, got {len(out)}"))
        return out


_PLAIN_TEXT = (
    "first_name", "last_name", "full_name", "company", "job_title", "region", "city", "postal_code", "form_id",
    "page_url", "referrer",
)  # fmt: skip
# In this order: the phone's region comes from the country read before it.
_READERS = (
    ("country", Normalizer._country),
    ("email", Normalizer._email),
    ("phone", Normalizer._phone),
    ("website", Normalizer._website),
    ("language", Normalizer._language),
)
