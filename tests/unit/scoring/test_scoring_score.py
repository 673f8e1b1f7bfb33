"""Scoring: sums and clamping, negative rules, grade boundaries, the qualified gate, the default ruleset."""

from __future__ import annotations

from typing import Any

import pytest

from scoring.domain import (
    DEFAULT_RULESET_YAML,
    Firmographic,
    Ruleset,
    Score,
    enrich,
    load_ruleset,
    score_lead,
)

pytestmark = pytest.mark.unit

LEAD: dict[str, Any] = {"email": "sam@acme.io", "country": "DE", "job_title": "Engineer"}
CONTEXT: dict[str, Any] = {
    "source": {"id": "s", "kind": "web", "name": "Web"},
    "is_test": False,
    "repeat_count": 0,
}


def make_ruleset(
    fit: list[int],
    intent: list[int],
    *,
    weights: tuple[int, int] = (1, 1),
    thresholds: tuple[int, int, int] = (75, 50, 25),
    qualified: str = "{min_fit: 0, min_intent: 0}",
) -> Ruleset:
    """Rules that always fire (every test lead has an email), worth the given points."""

    def rules(kind: str, points: list[int]) -> str:
        return "".join(
            f"  - id: {kind}_{i}\n    when: {{lead.email: {{exists: true}}}}\n    points: {p}\n"
            for i, p in enumerate(points)
        )

    a, b, c = thresholds
    no_rules = "  []\n"
    return load_ruleset(
        "name: t\n"
        f"fit:\n{rules('fit', fit) or no_rules}"
        f"intent:\n{rules('intent', intent) or no_rules}"
        f"grades: {{weights: {{fit: {weights[0]}, intent: {weights[1]}}},"
        f" thresholds: {{A: {a}, B: {b}, C: {c}}}}}\n"
        f"qualified: {qualified}\n"
    )


def run(ruleset: Ruleset, lead: dict[str, Any] = LEAD, context: dict[str, Any] = CONTEXT) -> Score:
    enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
    return score_lead(lead, enrichment, ruleset, context=context)


def test_points_add_up_per_score() -> None:
    score = run(make_ruleset([10, 15], [30, 5]))
    assert (score.fit, score.intent) == (25, 35)
    assert [(rule.id, rule.score, rule.points) for rule in score.fired] == [
        ("fit_0", "fit", 10),
        ("fit_1", "fit", 15),
        ("intent_0", "intent", 30),
        ("intent_1", "intent", 5),
    ]


def test_scores_are_clamped_to_0_and_100() -> None:
    score = run(make_ruleset([80, 50], [-30, 10]))
    assert (score.fit, score.intent) == (100, 0)
    # The fired rules still show the raw points, so the clamp is explainable.
    assert sum(rule.points for rule in score.fired if rule.score == "fit") == 130


def test_negative_rule_lowers_the_score() -> None:
    assert run(make_ruleset([40, -25], [])).fit == 15


def test_disabled_rule_does_not_fire() -> None:
    text = """
name: t
fit:
  - id: on
    when: {lead.email: {exists: true}}
    points: 10
  - id: off
    enabled: false
    when: {lead.email: {exists: true}}
    points: 50
grades: {weights: {fit: 1, intent: 1}, thresholds: {A: 75, B: 50, C: 25}}
qualified: {min_fit: 0, min_intent: 0}
"""
    score = run(load_ruleset(text))
    assert [rule.id for rule in score.fired] == ["on"]
    assert score.fit == 10


@pytest.mark.parametrize(
    ("fit", "intent", "grade"),
    [
        (75, 75, "A"),  # combined 75.0: exactly the A threshold
        (75, 74, "B"),  # combined 74.5: just below
        (100, 50, "A"),
        (50, 50, "B"),
        (50, 49, "C"),
        (25, 25, "C"),
        (25, 24, "D"),
        (0, 0, "D"),
    ],
)
def test_grade_thresholds_at_their_boundaries(fit: int, intent: int, grade: str) -> None:
    assert run(make_ruleset([fit], [intent])).grade == grade


def test_weights_tilt_the_grade() -> None:
    # fit 100, intent 0: combined 75 with weights 3:1 (grade A), 50 with 1:1 (grade B).
    assert run(make_ruleset([100], [0], weights=(3, 1))).grade == "A"
    assert run(make_ruleset([100], [0], weights=(1, 1))).grade == "B"
    assert run(make_ruleset([100], [0], weights=(0, 1))).grade == "D"


@pytest.mark.parametrize(
    ("fit", "intent", "qualified"),
    [(40, 20, True), (39, 20, False), (40, 19, False), (100, 100, True)],
)
def test_qualified_needs_both_minimums(fit: int, intent: int, qualified: bool) -> None:
    ruleset = make_ruleset([fit], [intent], qualified="{min_fit: 40, min_intent: 20}")
    assert run(ruleset).qualified is qualified


def test_qualified_min_grade() -> None:
    gate = "{min_fit: 0, min_intent: 0, min_grade: B}"
    assert run(make_ruleset([50], [50], qualified=gate)).qualified is True  # grade B
    assert run(make_ruleset([50], [49], qualified=gate)).qualified is False  # grade C


def test_qualified_unless_excludes_test_leads() -> None:
    gate = "{min_fit: 0, min_intent: 0, unless: {context.is_test: true}}"
    ruleset = make_ruleset([90], [90], qualified=gate)
    assert run(ruleset).qualified is True
    assert run(ruleset, context={**CONTEXT, "is_test": True}).qualified is False


def test_score_to_dict_is_json_ready() -> None:
    score = run(make_ruleset([10], [20]))
    assert score.to_dict() == {
        "fit": 10,
        "intent": 20,
        "grade": "D",
        "qualified": True,
        "fired": [
            {"id": "fit_0", "score": "fit", "points": 10, "reason": "lead.email exists"},
            {"id": "intent_0", "score": "intent", "points": 20, "reason": "lead.email exists"},
        ],
        "ruleset_version": score.ruleset_version,
    }
    assert score.ruleset_version == make_ruleset([10], [20]).version


# --- The default ruleset on recognisable leads ------------------------------------------------------

DEFAULT = load_ruleset(DEFAULT_RULESET_YAML)


def score_default(lead: dict[str, Any], firmographic: Firmographic | None = None, **context: Any) -> Score:
    enrichment = enrich(lead, firmographic=firmographic, provider_result=None, provider_status="disabled")
    return score_lead(lead, enrichment, DEFAULT, context={**CONTEXT, **context})


def test_default_ruleset_qualifies_a_director_at_a_mid_market_company_asking_for_a_demo() -> None:
    lead = {
        "email": "anna.schmidt@acme.io",
        "phone": "+4915112345678",
        "job_title": "Leiterin Vertrieb",
        "country": "DE",
        "form_id": "demo-request",
        "message": "Wir brauchen ein Angebot für 40 Nutzer",
    }
    score = score_default(lead, Firmographic("acme.io", "Acme", "201-500", "Software", "DE", None))
    fired = {rule.id for rule in score.fired}
    assert {
        "work_email",
        "company_mid_market",
        "decision_maker",
        "demo_or_pricing_form",
        "buying_words",
    } <= fired
    assert score.qualified is True
    assert score.grade == "A"


def test_default_ruleset_does_not_qualify_a_student_with_a_free_mailbox() -> None:
    lead = {"email": "kim@gmail.com", "job_title": "Student", "country": "DE", "form_id": "demo-request"}
    score = score_default(lead)
    assert {"free_email", "student"} <= {rule.id for rule in score.fired}
    assert score.fit == 0
    assert score.qualified is False


def test_default_ruleset_never_qualifies_test_or_disposable_leads() -> None:
    lead = {
        "email": "anna.schmidt@acme.io",
        "job_title": "CEO",
        "country": "DE",
        "form_id": "demo-request",
        "message": "pricing please",
    }
    firm = Firmographic("acme.io", "Acme", "1001-5000", "Software", "DE", None)
    assert score_default(lead, firm).qualified is True
    assert score_default(lead, firm, is_test=True).qualified is False
    disposable = {**lead, "email": "anna@mailinator.com"}
    assert score_default(disposable, firm).qualified is False


def test_default_ruleset_rewards_repeat_submissions() -> None:
    lead = {"email": "sam@acme.io", "country": "DE"}
    first = score_default(lead, repeat_count=0).intent
    second = score_default(lead, repeat_count=1).intent
    third = score_default(lead, repeat_count=2).intent
    assert first < second < third
