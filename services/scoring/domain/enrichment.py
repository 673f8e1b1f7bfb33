"""Enrichment: the facts scoring adds to a lead, each step recording where its fact came from.

Precedence when sources disagree: the operator's firmographics table beats the external provider
(operators curate it on purpose), and the provider only fills fields our own parsing left empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scoring.domain.emails import classify_email, email_domain
from scoring.domain.firmographics import EMPLOYEE_BANDS, Firmographic, normalize_domain
from scoring.domain.memo import Kept
from scoring.domain.phones import phone_facts
from scoring.domain.titles import FUNCTIONS, SENIORITIES, parse_title

# not_found: the provider answered that it knows nothing of the domain; no_domain: there was nothing to ask.
PROVIDER_STATUSES: tuple[str, ...] = (
    "ok",
    "not_found",
    "no_domain",
    "disabled",
    "unavailable",
    "timeout",
    "circuit_open",
)
# The provider was asked on purpose and did not answer: scores may be lower than they deserve.
_DEGRADED_STATUSES = frozenset({"unavailable", "timeout", "circuit_open"})

_SPECIFIC_SENIORITIES = frozenset(SENIORITIES) - {"individual"}
_SPECIFIC_FUNCTIONS = frozenset(FUNCTIONS) - {"other"}
_COMPANY_FIELDS: tuple[str, ...] = ("name", "employee_band", "industry", "country", "revenue_band")
_NO_COMPANY_FIELDS: dict[str, None] = {f"enrichment.company.{key}": None for key in ("domain", *_COMPANY_FIELDS)}


def lookup_domain(lead: Mapping[str, Any]) -> str | None:
    """The company domain to look up in the firmographics table: the email's, else the website's.

    Free and disposable mailboxes say nothing about the employer, so their domain is never used.
    """
    email = lead.get("email")
    if classify_email(email) in ("corporate", "role"):
        return email_domain(email)
    website = lead.get("website")
    return normalize_domain(website) if isinstance(website, str) else None


@dataclass
class Enrichment:
    """Derived facts about one lead, plus the trail of steps that produced them."""

    email_type: str
    domain: str | None
    company: Firmographic | None
    phone_country: str | None
    phone_line_type: str | None
    seniority: str | None
    function: str | None
    provider: dict[str, Any] | None
    partial: bool
    steps: list[dict[str, Any]] = field(default_factory=list)
    match: dict[str, str] | None = None  # how the company was found in the firmographics table

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, for the lead.scored event and storage."""
        return {**self.to_serialize(), "steps": [dict(step) for step in self.steps]}

    def to_serialize(self) -> dict[str, Any]:
        """`to_dict` holding this enrichment's own steps, not copies: for serializing at once, where nothing is kept
        that could change them (the copies are six dicts a lead)."""
        return {
            "email_type": self.email_type,
            "domain": self.domain,
            "company": self.company.to_dict() if self.company else None,
            "phone_country": self.phone_country,
            "phone_line_type": self.phone_line_type,
            "seniority": self.seniority,
            "function": self.function,
            "provider": self.provider,
            "partial": self.partial,
            "match": self.match,
            "steps": self.steps,
        }

    def as_fields(self) -> dict[str, Any]:
        """Flat {"enrichment.<path>": value} map that ruleset conditions address."""
        fields: dict[str, Any] = {
            "enrichment.email_type": self.email_type,
            "enrichment.domain": self.domain,
            "enrichment.phone_country": self.phone_country,
            "enrichment.phone_line_type": self.phone_line_type,
            "enrichment.seniority": self.seniority,
            "enrichment.function": self.function,
            "enrichment.partial": self.partial,
        }
        if self.company:
            for key, value in self.company.to_dict().items():
                fields[f"enrichment.company.{key}"] = value
        else:  # most leads: no company found, every company path present and empty
            fields.update(_NO_COMPANY_FIELDS)
        if self.provider:
            _flatten("enrichment.provider", self.provider, fields)
        return fields


def _flatten(prefix: str, value: Mapping[str, Any], into: dict[str, Any]) -> None:
    for key, item in value.items():
        path = f"{prefix}.{key}"
        if isinstance(item, Mapping):
            _flatten(path, item, into)
        else:
            into[path] = item


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def enrich(
    lead: Mapping[str, Any],
    *,
    firmographic: Firmographic | None,
    provider_result: Mapping[str, Any] | None,
    provider_status: str,
) -> Enrichment:
    """Combine the lead's own data, the firmographics match and the provider's answer into Enrichment.

    `provider_result` may carry `company` (firmographic fields), `seniority` and `function`; values
    outside our vocabularies are ignored. unavailable, timeout and circuit_open mark it partial.
    """
    _check_status(provider_status)
    return _built(_lead_facts(lead, lookup_domain(lead)), firmographic, provider_result, provider_status)


def _check_status(provider_status: str) -> None:
    if provider_status not in PROVIDER_STATUSES:
        raise ValueError(f"unknown provider_status {provider_status!r}, expected one of {PROVIDER_STATUSES}")


# What enrichment takes from a lead: its address's type, its company domain, its phone's country and line type,
# its title's seniority and function.
_LeadFacts = tuple[str, str | None, str | None, str | None, str | None, str | None]


def _lead_facts(lead: Mapping[str, Any], domain: str | None) -> _LeadFacts:
    phone = lead.get("phone")
    facts = phone_facts(phone if isinstance(phone, str) else None)
    title = lead.get("job_title")
    seniority, function = parse_title(title if isinstance(title, str) else None)
    return classify_email(lead.get("email")), domain, facts["country"], facts["line_type"], seniority, function


def _built(
    facts: _LeadFacts,
    firmographic: Firmographic | None,
    provider_result: Mapping[str, Any] | None,
    provider_status: str,
) -> Enrichment:
    email_type, domain, phone_country, phone_line_type, seniority, function = facts
    domain_source = "email" if email_type in ("corporate", "role") else "website" if domain else None
    steps: list[dict[str, Any]] = [
        {"step": "email_type", "source": "email_domain_lists", "ok": email_type != "none", "detail": email_type},
        {"step": "domain", "source": domain_source or "none", "ok": domain is not None, "detail": domain},
        {
            "step": "firmographics",
            "source": "firmographics_table",
            "ok": firmographic is not None,
            "detail": firmographic.domain if firmographic else "no match" if domain else "no domain",
        },
        {
            "step": "phone",
            "source": "phonenumbers",
            "ok": phone_line_type not in (None, "invalid"),
            "detail": phone_line_type or "no phone",
        },
        {
            "step": "title",
            "source": "title_parser",
            "ok": seniority is not None,
            "detail": f"{seniority}/{function}" if seniority else "no title",
        },
    ]

    provider = dict(provider_result) if provider_status == "ok" and provider_result is not None else None
    steps.append({"step": "provider", "source": "provider", "ok": provider_status == "ok", "detail": provider_status})

    company = firmographic
    if provider is not None:
        company, filled = _merge_company(company, domain, provider.get("company"))
        if filled:
            steps.append({"step": "company_from_provider", "source": "provider", "ok": True, "detail": filled})
        provider_seniority = _text(provider.get("seniority"))
        # A parsed title beats the provider, except when parsing found nothing specific.
        if seniority in (None, "individual") and provider_seniority in _SPECIFIC_SENIORITIES:
            seniority = provider_seniority
            steps.append({"step": "seniority_from_provider", "source": "provider", "ok": True, "detail": seniority})
        provider_function = _text(provider.get("function"))
        if function in (None, "other") and provider_function in _SPECIFIC_FUNCTIONS:
            function = provider_function
            steps.append({"step": "function_from_provider", "source": "provider", "ok": True, "detail": function})

    return Enrichment(
        email_type=email_type,
        domain=domain,
        company=company,
        phone_country=phone_country,
        phone_line_type=phone_line_type,
        seniority=seniority,
        function=function,
        provider=provider,
        partial=provider_status in _DEGRADED_STATUSES,
        steps=steps,
        match=_company_match(domain, firmographic),
    )


# Enrichments kept per memo: a full memo starts again, so a stream of new companies costs a bounded dict.
ENRICHMENT_MEMO_SIZE = 1024


class EnrichmentMemo:
    """Enrichments remembered by what they are made of, for a caller that only reads them (the consumer's batch).

    Without a provider's answer an Enrichment is a function of the lead's facts (address type, domain, phone
    country and line type, title's seniority and function), the firmographics row and the provider's status; leads
    of one company and title share one, and its `as_fields`, instead of building both (and serializing them) apiece.
    A provider's answer is never remembered: each such lead gets its own, as `enrich` builds it."""

    def __init__(self, size: int = ENRICHMENT_MEMO_SIZE) -> None:
        self._kept: Kept[tuple[Any, ...], tuple[Enrichment, dict[str, Any]]] = Kept(size)

    def enrich(
        self,
        lead: Mapping[str, Any],
        *,
        domain: str | None,
        firmographic: Firmographic | None,
        provider_result: Mapping[str, Any] | None,
        provider_status: str,
    ) -> tuple[Enrichment, dict[str, Any]]:
        """`enrich(lead, ...)` and its `as_fields()`, possibly shared with earlier leads: read them, never change
        them. `domain` is `lookup_domain(lead)`, which the caller has worked out already."""
        _check_status(provider_status)
        facts = _lead_facts(lead, domain)
        if provider_status == "ok" and provider_result is not None:
            enrichment = _built(facts, firmographic, provider_result, provider_status)
            return enrichment, enrichment.as_fields()
        key = (*facts, firmographic, provider_status)
        kept = self._kept.get(key)
        if kept is None:
            enrichment = _built(facts, firmographic, None, provider_status)
            kept = self._kept.keep(key, (enrichment, enrichment.as_fields()))
        return kept


def _company_match(domain: str | None, firmographic: Firmographic | None) -> dict[str, str] | None:
    """How the firmographics row was found: the lead's own domain, or a parent of it (uk.acme.com -> acme.com)."""
    if domain is None or firmographic is None:
        return None
    method = "domain" if firmographic.domain == domain else "parent_domain"
    return {"method": method, "value": firmographic.domain}


def _merge_company(
    company: Firmographic | None, domain: str | None, provided: Any
) -> tuple[Firmographic | None, list[str]]:
    """Fill the table's empty company fields from the provider; return the company and the fields filled."""
    if not isinstance(provided, Mapping):
        return company, []
    values: dict[str, str | None] = {key: getattr(company, key) if company else None for key in _COMPANY_FIELDS}
    filled: list[str] = []
    for key in _COMPANY_FIELDS:
        candidate = _text(provided.get(key))
        if values[key] is not None or candidate is None:
            continue
        if key == "employee_band" and candidate not in EMPLOYEE_BANDS:
            continue
        if key == "country":
            candidate = candidate.upper()
            if len(candidate) != 2 or not candidate.isalpha():
                continue
        values[key] = candidate
        filled.append(key)
    if not filled:
        return company, []
    company_domain = company.domain if company else normalize_domain(_text(provided.get("domain"))) or domain
    if company_domain is None:
        return company, []
    return Firmographic(domain=company_domain, **values), filled
