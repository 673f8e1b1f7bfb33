"""Rule conditions: every operator (match and no match), combinators and missing-field semantics."""

from __future__ import annotations

from typing import Any

import pytest

from scoring.domain import Firmographic, enrich, load_ruleset, score_lead

pytestmark = pytest.mark.unit

BASE_LEAD: dict[str, Any] = {
    "first_name": "Jane",
    "last_name": "Doe",
    "email": "jane.doe@acme.io",
    "phone": "+4915112345678",
    "company": "Acme",
    "job_title": "Head of Marketing",
    "website": "https://www.acme.io",
    "country": "DE",
    "language": "de",
    "message": "Please send pricing for 40 seats",
    "utm": {"source": "google", "medium": "cpc", "campaign": "Brand_DE", "term": None, "content": None},
    "click_ids": {"gclid": "abc123"},
    "consent": {"marketing": True},
    "custom": {"seats": "40", "tags": ["trial", "Enterprise"]},
    "page_url": "https://acme.example/pricing?plan=pro",
    "form_id": "demo-request",
    "postal_code": "01067",
}
BASE_CONTEXT: dict[str, Any] = {
    "source": {"id": "src_1", "kind": "web", "name": "Website"},
    "is_test": False,
    "duplicate_of": None,
    "repeat_count": 2,
}
ACME = Firmographic("acme.io", "Acme GmbH", "201-500", "Software", "DE", "10M-50M")


def fires(when: str, lead: dict[str, Any] | None = None, context: dict[str, Any] | None = None) -> bool:
    """Whether a single fit rule with this `when` (YAML flow text) fires for the lead."""
    text = f"""
name: t
fit:
  - id: r
    when: {when}
    points: 10
grades: {{weights: {{fit: 1, intent: 1}}, thresholds: {{A: 75, B: 50, C: 25}}}}
qualified: {{min_fit: 0, min_intent: 0}}
"""
    ruleset = load_ruleset(text)
    the_lead = BASE_LEAD if lead is None else lead
    enrichment = enrich(the_lead, firmographic=ACME, provider_result=None, provider_status="disabled")
    score = score_lead(the_lead, enrichment, ruleset, context=BASE_CONTEXT if context is None else context)
    return [rule.id for rule in score.fired] == ["r"]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{lead.country: {equals: DE}}", True),
        ("{lead.country: {equals: de}}", True),  # case-insensitive
        ("{lead.country: {equals: FR}}", False),
        ("{lead.country: DE}", True),  # shorthand for equals
        ("{lead.utm.campaign: brand_de}", True),
        ("{lead.custom.seats: {equals: 40}}", True),  # "40" in the lead, a number in YAML
        ("{lead.custom.seats: {equals: 41}}", False),
        ("{lead.consent.marketing: {equals: true}}", True),
        ("{lead.consent.marketing: {equals: false}}", False),
        ("{lead.postal_code: {equals: 01067}}", True),  # YAML would read 01067 as octal 567
        ("{enrichment.email_type: {equals: corporate}}", True),
        ("{enrichment.email_type: {equals: free}}", False),
    ],
)
def test_equals(when: str, expected: bool) -> None:
    assert fires(when) is expected


def test_equals_reads_country_no_as_norway_not_false() -> None:
    lead = {**BASE_LEAD, "country": "NO"}
    assert fires("{lead.country: NO}", lead) is True
    assert fires("{lead.country: {one_of: [SE, NO, DK]}}", lead) is True
    assert fires("{lead.country: NO}") is False


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{lead.country: {one_of: [AT, DE, CH]}}", True),
        ("{lead.country: {one_of: [at, de]}}", True),
        ("{lead.country: {one_of: [FR, ES]}}", False),
        ("{enrichment.company.employee_band: {one_of: [51-200, 201-500]}}", True),
        ("{enrichment.company.employee_band: {one_of: [1-10, 11-50]}}", False),
        ("{context.source.kind: {one_of: [web, api]}}", True),
        ("{lead.country: [AT, DE]}", True),  # a bare list is one_of, as in routing rules
        ("{lead.country: [FR, ES]}", False),
    ],
)
def test_one_of(when: str, expected: bool) -> None:
    assert fires(when) is expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{lead.message: {contains: PRICING}}", True),
        ("{lead.message: {contains: invoice}}", False),
        ("{lead.custom.tags: {contains: enterprise}}", True),  # a list matches when any item does
        ("{lead.custom.tags: {contains: startup}}", False),
    ],
)
def test_contains(when: str, expected: bool) -> None:
    assert fires(when) is expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (r"{lead.page_url: {regex: '/pricing\b'}}", True),
        (r"{lead.page_url: {regex: '/PRICING'}}", True),  # case-insensitive
        (r"{lead.page_url: {regex: '^/pricing'}}", False),  # anchored: the URL starts with https
        (r"{lead.page_url: {regex: '/demo'}}", False),
        (r"{lead.email: {regex: '@acme\.io$'}}", True),
    ],
)
def test_regex(when: str, expected: bool) -> None:
    assert fires(when) is expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{context.repeat_count: {range: {min: 2}}}", True),  # inclusive lower bound
        ("{context.repeat_count: {range: {min: 3}}}", False),
        ("{context.repeat_count: {range: {max: 2}}}", True),  # inclusive upper bound
        ("{context.repeat_count: {range: {max: 1}}}", False),
        ("{context.repeat_count: {range: {min: 1, max: 5}}}", True),
        ("{lead.custom.seats: {range: {min: 25.5, max: 100}}}", True),  # numeric string
        ("{lead.country: {range: {min: 0}}}", False),  # not a number
    ],
)
def test_range(when: str, expected: bool) -> None:
    assert fires(when) is expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{lead.phone: {exists: true}}", True),
        ("{lead.phone: {exists: false}}", False),
        ("{lead.referrer: {exists: true}}", False),
        ("{lead.referrer: {exists: false}}", True),
        ("{lead.utm.term: {exists: false}}", True),
        ("{lead.click_ids: {exists: true}}", True),
        ("{enrichment.company.name: {exists: true}}", True),
        ("{context.duplicate_of: {exists: true}}", False),
    ],
)
def test_exists(when: str, expected: bool) -> None:
    assert fires(when) is expected


def test_blank_strings_and_empty_maps_do_not_exist() -> None:
    lead = {**BASE_LEAD, "message": "   ", "click_ids": {"gclid": None}}
    assert fires("{lead.message: {exists: false}}", lead) is True
    assert fires("{lead.click_ids: {exists: false}}", lead) is True


def test_missing_field_matches_nothing_but_not_of_it_holds() -> None:
    lead = {key: value for key, value in BASE_LEAD.items() if key != "country"}
    assert fires("{lead.country: {equals: DE}}", lead) is False
    assert fires("{lead.country: {regex: '.*'}}", lead) is False
    assert fires("{not: {lead.country: {equals: DE}}}", lead) is True


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{all: [{lead.country: DE}, {enrichment.email_type: corporate}]}", True),
        ("{all: [{lead.country: DE}, {enrichment.email_type: free}]}", False),
        ("{any: [{lead.country: FR}, {enrichment.email_type: corporate}]}", True),
        ("{any: [{lead.country: FR}, {enrichment.email_type: free}]}", False),
        ("{not: {lead.country: FR}}", True),
        ("{not: {lead.country: DE}}", False),
        # Several entries in one mapping must all hold.
        ("{lead.country: DE, enrichment.seniority: director}", True),
        ("{lead.country: DE, enrichment.seniority: vp}", False),
        # Several operators on one field must all hold.
        ("{lead.country: {exists: true, one_of: [DE, AT]}}", True),
        ("{lead.country: {exists: true, one_of: [FR, AT]}}", False),
        (
            "{any: [{not: {lead.country: DE}}, {all: [{lead.utm.medium: cpc}, {lead.click_ids.gclid: abc123}]}]}",
            True,
        ),
        (
            "{any: [{not: {lead.country: DE}}, {all: [{lead.utm.medium: cpc}, {lead.click_ids.gclid: xyz}]}]}",
            False,
        ),
    ],
)
def test_combinators(when: str, expected: bool) -> None:
    assert fires(when) is expected


def test_rule_without_description_explains_its_condition() -> None:
    text = """
name: t
fit:
  - id: dach
    when: {lead.country: {one_of: [DE, AT]}, context.repeat_count: {range: {min: 1}}}
    points: 5
grades: {weights: {fit: 1, intent: 1}, thresholds: {A: 75, B: 50, C: 25}}
qualified: {min_fit: 0, min_intent: 0}
"""
    ruleset = load_ruleset(text)
    enrichment = enrich(BASE_LEAD, firmographic=None, provider_result=None, provider_status="disabled")
    score = score_lead(BASE_LEAD, enrichment, ruleset, context=BASE_CONTEXT)
    assert score.fired[0].reason == "lead.country one of [DE, AT] and context.repeat_count range 1..inf"
