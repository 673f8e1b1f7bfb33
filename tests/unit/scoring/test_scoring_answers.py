"""A lead's score dict from memory (ScoreDicts.of_lead, keyed by Ruleset.score_keys) is the one its own rules give."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tests.unit.scoring.test_scoring_predicates import EQUALITY_RULES, MISSING_FIELD_RULES, UNLESS_RULES

from scoring.domain import DEFAULT_RULESET_YAML, Firmographic, ScoreDicts, enrich, load_ruleset, score_lead

pytestmark = pytest.mark.unit

WORDS_RULES = """
name: free text in every shape a rule can test it
fit:
  - {id: words, when: {lead.message: {contains: budget}}, points: 10}
  - {id: no_call, when: {not: {lead.message: {regex: 'call'}}}, points: 5}
  - {id: named, when: {all: [{lead.email: {exists: true}}, {lead.email: {regex: '^[a-z]+@'}}]}, points: 20}
  - id: either
    when: {any: [{lead.message: {regex: 'demo'}}, {lead.message: {regex: 'trial'}}, {lead.country: DE}]}
    points: 30
  - {id: whole, when: {enrichment.company: {exists: true}}, points: 5}
  - {id: counted, when: {repeat_count: {range: {min: 1}}}, points: 15}
  - {id: test_lead, when: {is_test: true}, points: 1}
grades: {weights: {fit: 60, intent: 40}, thresholds: {A: 70, B: 50, C: 30}}
qualified:
  min_fit: 40
  min_intent: 0
  unless: {any: [{lead.message: {regex: 'student'}}, {lead.email: {regex: '\\\\.edu$'}}]}
"""

RULESETS = [DEFAULT_RULESET_YAML, WORDS_RULES, EQUALITY_RULES, MISSING_FIELD_RULES, UNLESS_RULES]

TITLES: list[Any] = ["VP Sales", "Student", "Head of Operations", "werkstudent marketing", None, "", 50, ["CEO"]]
MESSAGES: list[Any] = [
    "Please call me back about pricing",
    "Can we get a demo? Our budget is set",
    "Quiero una cotización",
    "hello there",
    "I am a student",
    "x" * 300 + " pricing",  # past the per-value memo's length: tested as it comes
    "   ",
    "",
    None,
    7,
    ["demo", "trial"],
]
FORMS: list[Any] = ["demo-request", "ebook", "newsletter", "contact-sales", "DE", "50", None, 50]
PAGES: list[Any] = ["https://acme.example/pricing", "https://acme.example/blog", "https://x.example/demo?x=1", None]
EMAILS = [
    "ceo{}@acme-corp.com",
    "sam@uni{}.edu",
    "jo{}@mailinator.com",
    "amy{}@uni.edu",
    "x{}@competitor-one.example",
    "{}@gmail.com",
]
COMPANIES = [
    None,
    Firmographic(domain="acme-corp.com", employee_band="51-200", industry="Software", country="US"),
    Firmographic(domain="acme-corp.com", employee_band="1-10", industry="Retail", country="BR"),
]
REPEATS: list[Any] = [0, 1, 2, True, False, 1.0, None]


def _leads(count: int, seed: int) -> list[tuple[dict[str, Any], Firmographic | None, dict[str, Any]]]:
    """Leads of every shape: unique addresses, messages and click ids beside titles, forms and pages that repeat."""
    rng = random.Random(seed)
    leads = []
    for i in range(count):
        message = rng.choice(MESSAGES)
        if type(message) is str and message.strip() and rng.random() < 0.5:
            message = f"{message} (ticket {i})"  # a message nobody sent before
        lead: dict[str, Any] = {
            "email": rng.choice(EMAILS).format(i) if rng.random() < 0.9 else rng.choice([None, ""]),
            "job_title": rng.choice(TITLES),
            "message": message,
            "form_id": rng.choice(FORMS),
            "page_url": rng.choice(PAGES),
            "country": rng.choice(["DE", " de ", "BR", None, 49]),
            "utm": rng.choice([{}, {"medium": "cpc", "campaign": f"webinar-{i}"}, {"medium": "email"}, None]),
            "click_ids": rng.choice([{}, {"gclid": f"g-{i}"}, {"gclid": ""}]),
        }
        context = {
            "source": {"kind": rng.choice(["web", "api", "meta", "google_ads"])},
            "is_test": rng.choice([False, False, True, 1]),
            "duplicate_of": None,
            "repeat_count": rng.choice(REPEATS),
        }
        leads.append((lead, rng.choice(COMPANIES), context))
    return leads


@pytest.mark.parametrize("text", RULESETS, ids=["default", "words", "equality", "missing", "unless"])
def test_a_score_from_memory_is_the_one_the_leads_own_rules_give(text: str) -> None:
    ruleset = load_ruleset(text)
    dicts = ScoreDicts()
    leads = _leads(1_500, seed=len(text))
    for _ in range(2):  # the second pass answers every lead from memory
        for lead, company, context in leads:
            enrichment = enrich(lead, firmographic=company, provider_result=None, provider_status="disabled")
            fields = enrichment.as_fields()
            expected = score_lead(lead, enrichment, ruleset, context=context, fields=fields).to_dict()
            got = dicts.of_lead(lead, enrichment, ruleset, context=context, fields=fields)
            assert got == expected, (lead, company, context)
    # Leads alike shared their scores: far fewer were worked out than there are leads.
    assert 0 < len(dicts._by_lead) < len(leads) * 3 // 4


def test_unique_addresses_and_messages_share_a_key_when_their_tests_answer_alike() -> None:
    ruleset = load_ruleset(DEFAULT_RULESET_YAML)
    keys = ruleset.score_keys
    values = dict.fromkeys(ruleset.tested_fields)
    values |= {"lead.email": "a1@acme.com", "lead.message": "hello #1", "repeat_count": 0, "is_test": False}
    first = keys.key(values)
    assert first is not None
    assert keys.key(values | {"lead.email": "b2@acme.com", "lead.message": "hello #2"}) == first
    assert keys.key(values | {"lead.email": "b2@uni.edu"}) != first  # the student rule tells these apart
    assert keys.key(values | {"lead.message": "a demo please"}) != first
    assert keys.key(values | {"lead.message": None}) != first  # wrote_a_message
    # Fields tested for equality with texts read as their folded text when it is one of those, else as none of them.
    acme = keys.key(values | {"enrichment.domain": "acme1.com", "lead.country": "DE"})
    assert keys.key(values | {"enrichment.domain": "acme2.com", "lead.country": " de "}) == acme
    assert keys.key(values | {"enrichment.domain": "competitor-one.example", "lead.country": "DE"}) != acme
    assert keys.key(values | {"enrichment.domain": " Competitor-One.EXAMPLE"}) == keys.key(
        values | {"enrichment.domain": "competitor-one.example"}
    )
    assert keys.key(values | {"repeat_count": True}) != keys.key(values | {"repeat_count": 1})
    assert keys.key(values | {"repeat_count": 1.0}) is None  # floats are left to the rules
    assert keys.key(values | {"lead.country": ["DE"]}) is None
