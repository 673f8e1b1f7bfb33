"""Hand-raisers first: the shipped ruleset grades explicit asks (demo, pricing or quote, sales, call back) A and
qualifies them in six languages whatever the email type, while students, competitors, throwaway addresses and test
leads stay out; and the two rule keys that make it work (`grade_at_least`, `qualifies`)."""

from __future__ import annotations

from typing import Any

import pytest

from scoring.domain import DEFAULT_RULESET_YAML, RulesetError, Score, enrich, load_ruleset, score_lead

pytestmark = pytest.mark.unit

DEFAULT = load_ruleset(DEFAULT_RULESET_YAML)
CONTEXT: dict[str, Any] = {"source": {"id": "s", "kind": "web", "name": "Web"}, "is_test": False, "repeat_count": 0}
# Nobody we know anything about: a free mailbox, no title, no company, no country.
NOBODY: dict[str, Any] = {"email": "someone@gmail.com"}
O_IN_TWO_PARTS = "\u09c7\u09be"  # the Bengali vowel sign ো typed as its two halves, as some keyboards do


def score(lead: dict[str, Any], ruleset: Any = DEFAULT, **context: Any) -> Score:
    enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
    return score_lead(lead, enrichment, ruleset, context={**CONTEXT, **context})


def fired(result: Score) -> set[str]:
    return {rule.id for rule in result.fired}


@pytest.mark.parametrize(
    "message",
    [
        # English
        "Can we get a demo next week?",
        "What is your pricing for 40 seats?",
        "Please send me a quote",
        "I'd like to talk to sales",
        "Please call me back tomorrow morning",
        # German
        "Demo anfragen",
        "Bitte um Rückruf",
        "Bitte senden Sie uns Ihre Preise",
        "Wir brauchen ein Angebot für 40 Nutzer",
        "Können Sie mich zurückrufen?",
        # Spanish
        "Quisiera solicitar demo",
        "¿Cuáles son los precios?",
        "Necesito una cotización",
        "Llámenme por favor",
        "Quiero hablar con un comercial",
        # French
        "Demande de démo",
        "Quels sont vos tarifs ?",
        "Pouvez-vous m'envoyer un devis ?",
        "Rappelez-moi s'il vous plaît",
        # Portuguese
        "Quero pedir demonstração",
        "Quais são os preços?",
        "Preciso de um orçamento",
        "Ligue-me amanhã",
        "Podem me ligar?",
        # Bengali: demo, price (দাম, মূল্য), call me, a demo with ো typed in two parts
        "আমরা একটি ডেমো চাই",
        "দাম কত?",
        "মূল্য কত?",
        "আমাকে কল করুন",
        "আমরা একটি ডেম" + O_IN_TWO_PARTS + " চাই",
    ],
)
def test_a_hand_raise_in_any_shipped_language_is_graded_a_and_qualified_whatever_the_email(message: str) -> None:
    result = score({**NOBODY, "message": message})
    assert "hand_raise" in fired(result)
    assert (result.grade, result.qualified) == ("A", True)


@pytest.mark.parametrize(
    "message",
    [
        "Me llamo Juan y trabajo en logística",  # "my name is", not "call me"
        "Gracias por su tiempo, queremos aumentar las ventas",
        "আপনার মূল্যবান সময়ের জন্য ধন্যবাদ",  # "your valuable time": মূল্যবান is not a price
        "Ich arbeite im Vertrieb und teste gern kostenlos",
        "Great product, keep it up",
    ],
)
def test_messages_that_ask_for_nothing_are_not_hand_raises(message: str) -> None:
    result = score({**NOBODY, "message": message})
    assert "hand_raise" not in fired(result)
    assert result.qualified is False


@pytest.mark.parametrize(
    "lead",
    [
        {"form_id": "demo-request"},
        {"form_id": "contact_sales"},
        {"form_id": "rueckruf-formular"},
        {"form_id": "devis"},
        {"page_url": "https://handoff.example/de/preise"},
        {"page_url": "https://handoff.example/es/solicitar-demo?utm_source=x"},
        {"page_url": "https://handoff.example/br/pre%C3%A7os"},
        {"page_url": "https://handoff.example/pricing", "form_id": "contact"},
    ],
)
def test_the_form_id_and_the_page_url_are_hand_raises_too(lead: dict[str, Any]) -> None:
    result = score({**NOBODY, **lead})
    assert "hand_raise" in fired(result)
    assert (result.grade, result.qualified) == ("A", True)


@pytest.mark.parametrize(
    "lead",
    [
        {"page_url": "https://handoff.example/pricing", "form_id": "newsletter-footer"},  # asked for a newsletter
        {"page_url": "https://handoff.example/blog/pricing-strategy-for-startups", "form_id": "contact"},
        {"form_id": "demographics-survey"},
        {"form_id": "trial-signup"},  # a trial is intent, not a request to be contacted
    ],
)
def test_a_content_form_on_a_pricing_page_or_a_lookalike_id_is_not_a_hand_raise(lead: dict[str, Any]) -> None:
    assert "hand_raise" not in fired(score({**NOBODY, **lead}))


def test_the_hand_raise_shows_in_the_fired_rules_with_its_reason() -> None:
    result = score({"email": "maria.lopez@gmail.com", "job_title": "VP Marketing", "form_id": "demo-request"})
    reasons = {rule.id: rule.reason for rule in result.fired}
    assert reasons["hand_raise"].startswith("Hand-raise:")
    assert "free_email" in reasons  # the free mailbox still counts against fit; it just cannot hold the lead back


@pytest.mark.parametrize(
    ("lead", "context", "kept_out_by"),
    [
        ({"email": "kim@gmail.com", "job_title": "Student", "form_id": "demo-request"}, {}, "student"),
        ({"email": "kim@stateu.edu", "message": "Can I get a demo for my thesis?"}, {}, "student"),
        (
            {"email": "alex@competitor-one.example", "form_id": "contact-sales", "message": "Your pricing?"},
            {},
            "competitor",
        ),
        ({"email": "x7@mailinator.com", "form_id": "demo-request"}, {}, "disposable_email"),
        ({"email": "ops@acme.io", "form_id": "demo-request"}, {"is_test": True}, None),
    ],
)
def test_students_competitors_throwaways_and_tests_asking_for_a_demo_stay_out(
    lead: dict[str, Any], context: dict[str, Any], kept_out_by: str | None
) -> None:
    result = score(lead, **context)
    assert "hand_raise" in fired(result)  # the ask is on record ...
    if kept_out_by:
        assert kept_out_by in fired(result)
    assert result.qualified is False  # ... but it earns no promotion: the grade is what the points give
    assert result.grade == DEFAULT.grade(result.fit, result.intent) != "A"


# --- the two rule keys ------------------------------------------------------------------------------------------

RULESET = """\
name: t
fit:
  - {{id: corporate, when: {{enrichment.email_type: corporate}}, points: 10}}
intent:
  - id: asked
    when: {{lead.message: {{contains: call me}}}}
    points: 5
{extra}
grades: {{weights: {{fit: 1, intent: 1}}, thresholds: {{A: 70, B: 50, C: 30}}}}
qualified:
  min_fit: 40
  min_intent: 40
  unless: {{lead.email: {{regex: 'competitor\\.example$'}}}}
"""


def ruleset(extra: str) -> Any:
    return load_ruleset(RULESET.format(extra=extra))


def test_grade_at_least_lifts_the_grade_and_qualifies_qualifies_the_lead() -> None:
    lead = {"email": "pat@acme.io", "message": "please call me"}
    plain = score(lead, ruleset(""))
    assert (plain.grade, plain.qualified) == ("D", False)
    lifted = score(lead, ruleset("    grade_at_least: B\n    qualifies: true"))
    assert (lifted.fit, lifted.intent) == (plain.fit, plain.intent)  # the points are unchanged
    assert (lifted.grade, lifted.qualified) == ("B", True)
    only_grade = score(lead, ruleset("    grade_at_least: C"))
    assert (only_grade.grade, only_grade.qualified) == ("C", False)


def test_grade_at_least_never_lowers_a_grade() -> None:
    generous = RULESET.replace("points: 5", "points: 100").replace("points: 10}", "points: 100}")
    result = score(
        {"email": "pat@acme.io", "message": "call me"}, load_ruleset(generous.format(extra="    grade_at_least: C"))
    )
    assert result.grade == "A"


def test_qualified_unless_cancels_the_promotion() -> None:
    result = score(
        {"email": "alex@competitor.example", "message": "call me"},
        ruleset("    grade_at_least: A\n    qualifies: true"),
    )
    assert (result.grade, result.qualified) == ("D", False)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("    grade_at_least: E", "rule 'asked': grade_at_least must be one of A, B, C, D"),
        ("    qualifies: maybe", "rule 'asked': qualifies must be true or false"),
    ],
)
def test_a_wrong_promotion_names_its_line(extra: str, fragment: str) -> None:
    with pytest.raises(RulesetError) as caught:
        ruleset(extra)
    assert any(line == 8 and fragment in message for line, message in caught.value.errors), caught.value.errors
