"""Compiled rule conditions answer exactly what the shared evaluator answers, for every operator and kind of value."""

from __future__ import annotations

from typing import Any

import pytest

from common.conditions import AllOf, AnyOf, Bounds, Condition, FieldTest, Not, Scalar, compile_regex, evaluate
from common.conditions.predicates import compile_condition, condition_fields
from scoring.domain import DEFAULT_RULESET_YAML, enrich, load_ruleset, score_lead
from scoring.domain.score import field_resolver

pytestmark = pytest.mark.unit

VALUES: list[Any] = [
    None,
    "",
    "   ",
    "DE",
    " de ",
    "Germany",
    "50",
    " 50.0 ",
    "5e1",
    "nan",
    "inf",
    "-3",
    "11-50",
    "c_level",
    "Please call me back",
    "x" * 20_000 + "pricing",
    0,
    1,
    50,
    -3,
    50.0,
    float("nan"),
    True,
    False,
    [],
    ["de", "FR"],
    [None, " 50 "],
    ["", None],
    {},
    {"a": "b"},
    {"a": None},
    ("trial", "Enterprise"),
]


def _s(text: str, typed: Any = None) -> Scalar:
    return Scalar(text, text if typed is None else typed)


TESTS: list[FieldTest] = [
    FieldTest("v", "equals", _s("DE")),
    FieldTest("v", "equals", _s("50", 50)),
    FieldTest("v", "equals", _s("-3", -3)),
    FieldTest("v", "equals", _s("true", True)),
    FieldTest("v", "equals", _s("false", False)),
    FieldTest("v", "equals", _s("")),
    FieldTest("v", "one_of", (_s("de"), _s("fr"), _s("11-50"))),
    FieldTest("v", "one_of", (_s("de"), _s("50", 50))),
    FieldTest("v", "one_of", (_s("c_level"), _s("vp"))),
    FieldTest("v", "contains", _s("pricing")),
    FieldTest("v", "contains", _s("Enterprise")),
    FieldTest("v", "contains", _s("50", 50)),
    FieldTest("v", "regex", compile_regex(r"call\s+me")),
    FieldTest("v", "regex", compile_regex(r"^d")),
    FieldTest("v", "range", Bounds(1, None)),
    FieldTest("v", "range", Bounds(None, 50, high_inclusive=False)),
    FieldTest("v", "range", Bounds(-3, 50, low_inclusive=False)),
    FieldTest("v", "exists", True),
    FieldTest("v", "exists", False),
]


@pytest.mark.parametrize("test", TESTS, ids=lambda t: f"{t.operator}:{t.argument}"[:40])
def test_each_operator_answers_as_the_shared_evaluator_for_every_kind_of_value(test: FieldTest) -> None:
    compiled = compile_condition(test)
    for value in VALUES:
        resolve = {"v": value}.get
        assert compiled(resolve) is evaluate(test, resolve), (test, value)


def test_combinators_and_negation_answer_as_the_shared_evaluator() -> None:
    de = FieldTest("a", "equals", _s("DE"))
    fifty = FieldTest("b", "range", Bounds(50, None))
    conditions: list[Condition] = [
        AllOf(()),
        AnyOf(()),
        AllOf((de,)),
        AnyOf((de, fifty)),
        AllOf((de, fifty)),
        Not(de),
        FieldTest("a", "not", AnyOf((de, fifty))),
        AnyOf((AllOf((de, Not(fifty))), Not(AnyOf((de,))))),
    ]
    for condition in conditions:
        compiled = compile_condition(condition)
        for a in ("DE", "fr", None, ""):
            for b in (49, 50, "60", None, [10, 70]):
                resolve = {"a": a, "b": b}.get
                assert compiled(resolve) is evaluate(condition, resolve), (condition, a, b)


def test_scoring_with_compiled_rules_fires_the_rules_the_evaluator_fires() -> None:
    ruleset = load_ruleset(DEFAULT_RULESET_YAML)
    lead = {
        "email": "ceo@acme-corp.com",
        "job_title": "VP Sales",
        "message": "Please call me back about pricing",
        "country": "DE",
        "form_id": "demo-request",
        "page_url": "https://acme.example/pricing",
        "utm": {},
        "click_ids": {},
        "consent": {},
        "custom": {},
    }
    context = {"source": {"kind": "meta"}, "is_test": False, "duplicate_of": None, "repeat_count": 2}
    enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
    score = score_lead(lead, enrichment, ruleset, context=context)

    resolve = field_resolver(lead, enrichment, context)
    expected = [rule.id for rule in ruleset.rules if rule.enabled and evaluate(rule.when, resolve)]
    assert [rule.id for rule in score.fired] == expected
    assert expected  # the lead is a hand-raise from a VP: several rules fire


RULESET = load_ruleset(DEFAULT_RULESET_YAML)


def _reference(lead: dict[str, Any], context: dict[str, Any]) -> tuple[Any, ...]:
    """score_lead as written before compilation: every rule and `qualified.unless` through `evaluate`."""
    ruleset = RULESET
    enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
    resolve = field_resolver(lead, enrichment, context)
    matched = [rule for rule in ruleset.rules if rule.enabled and evaluate(rule.when, resolve)]
    fit = max(0, min(100, sum(rule.points for rule in matched if rule.score == "fit")))
    intent = max(0, min(100, sum(rule.points for rule in matched if rule.score == "intent")))
    grade = ruleset.grade(fit, intent)
    gate = ruleset.qualification
    excluded = gate.unless is not None and evaluate(gate.unless, resolve)
    if not excluded:
        grade = min([grade, *[r.grade_at_least for r in matched if r.grade_at_least]], key="ABCD".index)
    qualified = not excluded and (
        any(rule.qualifies for rule in matched)
        or (fit >= gate.min_fit and intent >= gate.min_intent and (gate.min_grade is None or grade <= gate.min_grade))
    )
    return [rule.id for rule in matched], fit, intent, grade, qualified


@pytest.mark.parametrize("is_test", [False, True])
def test_score_lead_answers_as_before_for_hand_raises_students_competitors_and_test_leads(is_test: bool) -> None:
    ruleset = RULESET
    answers = []
    emails = ["ceo@acme-corp.com", "jo@mailinator.com", "amy@uni.edu", "x@competitor-one.example", "j@gmail.com"]
    titles = ["VP Sales", "Student", "Head of Operations", None]
    messages = ["Please call me back about pricing", None, "hello"]
    forms = ["demo-request", "ebook", "newsletter"]
    for email in emails:
        for title in titles:
            for message in messages:
                for form in forms:
                    lead: dict[str, Any] = {
                        "email": email,
                        "job_title": title,
                        "message": message,
                        "form_id": form,
                        "utm": {},
                    }
                    context = {"source": {"kind": "meta"}, "is_test": is_test, "duplicate_of": None, "repeat_count": 2}
                    enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
                    score = score_lead(lead, enrichment, ruleset, context=context)
                    got = ([r.id for r in score.fired], score.fit, score.intent, score.grade, score.qualified)
                    assert got == _reference(lead, context), lead
                    answers.append(got)
    assert len(answers) == 180
    # The grid holds qualified leads (unless a test lead), unqualified ones, and floors cancelled by `unless`.
    assert any(qualified for *_, qualified in answers) is not is_test
    assert any(not qualified for *_, qualified in answers)
    assert any("hand_raise" in fired and grade != "A" for fired, _, _, grade, _ in answers)


def test_a_rulesets_tested_fields_are_every_field_its_rules_and_unless_test_under_their_canonical_paths() -> None:
    fields = set(RULESET.tested_fields)
    # Inside any/all, under `not`, through the first dialect's `context.` alias, and only in `qualified.unless`.
    assert {"lead.form_id", "lead.page_url", "lead.message", "source.kind", "repeat_count"} <= fields
    assert {"is_test", "enrichment.email_type", "lead.job_title", "enrichment.domain"} <= fields
    assert not any(path.startswith("context.") for path in fields)
    condition = AllOf((FieldTest("a", "equals", _s("x")), Not(AnyOf((FieldTest("b", "exists", True),)))))
    assert condition_fields(condition) == {"a", "b"}


EQUALITY_RULES = """
name: equality rules, looked up by field
fit:
  - {id: de_or_fr, when: {lead.form_id: {one_of: [DE, fr]}}, points: 10}
  - {id: message_text, when: {lead.message: {regex: 'call'}}, points: 3}
  - {id: de, when: {lead.form_id: DE}, points: 5}
  - {id: fifty_or_c_level, when: {lead.form_id: {one_of: ["50", c_level]}}, points: 5}
  - {id: fifty_number, when: {lead.form_id: 50}, points: 5}
  - {id: eleven_to_fifty, when: {lead.job_title: {one_of: [11-50, de]}}, points: 5}
  - {id: not_de, when: {not: {lead.form_id: DE}}, points: 1}
grades: {weights: {fit: 60, intent: 40}, thresholds: {A: 70, B: 50, C: 30}}
qualified: {min_fit: 40, min_intent: 0}
"""


def test_text_equality_rules_looked_up_by_field_fire_as_the_evaluator_for_every_kind_of_value() -> None:
    ruleset = load_ruleset(EQUALITY_RULES)
    groups, _others = ruleset.rule_plan
    assert {path for path, _, _ in groups} == {"lead.form_id", "lead.job_title"}  # the lookups are in play
    context = {"source": {"kind": "web"}, "is_test": False, "duplicate_of": None, "repeat_count": 0}
    for form_id in VALUES:
        for title in ("11-50", " DE ", None, 50, ["de"]):
            lead: dict[str, Any] = {"form_id": form_id, "job_title": title, "message": "call me"}
            enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
            resolve = field_resolver(lead, enrichment, context)
            expected = [rule.id for rule in ruleset.rules if evaluate(rule.when, resolve)]
            fired = [rule.id for rule in score_lead(lead, enrichment, ruleset, context=context).fired]
            assert fired == expected, (form_id, title)


def test_an_anys_regexes_of_one_field_searched_as_one_answer_as_the_evaluator() -> None:
    call, anchored, price = compile_regex(r"call\s+me"), compile_regex(r"^d"), compile_regex(r"pric(e|ing)$")
    conditions: list[Condition] = [
        AnyOf((FieldTest("a", "regex", call), FieldTest("b", "equals", _s("DE")), FieldTest("a", "regex", anchored))),
        AnyOf((FieldTest("a", "regex", call), FieldTest("a", "regex", anchored), FieldTest("a", "regex", price))),
        Not(AnyOf((FieldTest("a", "regex", price), FieldTest("a", "regex", anchored)))),
    ]
    for condition in conditions:
        compiled = compile_condition(condition)
        for a in VALUES:
            for b in ("de", None):
                resolve = {"a": a, "b": b}.get
                assert compiled(resolve) is evaluate(condition, resolve), (condition, a, b)


MISSING_FIELD_RULES = """
name: rules answered for a lead missing their fields
fit:
  - {id: no_message, when: {not: {lead.message: {regex: 'call'}}}, points: 5}
  - {id: message_absent, when: {lead.message: {exists: false}}, points: 5}
  - {id: message_or_page, when: {any: [{lead.message: {contains: demo}}, {lead.page_url: {regex: pricing}}]}, points: 5}
  - id: neither
    when: {all: [{not: {lead.form_id: {exists: true}}}, {not: {lead.utm.source: {contains: x}}}]}
    points: 5
  - {id: campaign, when: {lead.utm.campaign: {regex: 'webinar'}}, points: 5}
grades: {weights: {fit: 60, intent: 40}, thresholds: {A: 70, B: 50, C: 30}}
qualified: {min_fit: 40, min_intent: 0}
"""


@pytest.mark.parametrize("text", [DEFAULT_RULESET_YAML, MISSING_FIELD_RULES])
def test_rules_skipped_for_a_lead_missing_all_their_fields_fire_as_the_evaluator(text: str) -> None:
    ruleset = load_ruleset(text)
    assert {when for *_, when in ruleset.gated_rules} == ({False, True} if text == MISSING_FIELD_RULES else {False})
    context = {"source": {"kind": "web"}, "is_test": False, "duplicate_of": None, "repeat_count": 0}
    fields = ("message", "page_url", "form_id", "job_title")
    for message in (None, "", "call me for a demo", 50):
        for page_url in (None, "https://x.example/pricing", "   "):
            for form_id in (None, "demo-request", "newsletter"):
                lead: dict[str, Any] = dict(zip(fields, (message, page_url, form_id, None), strict=True))
                lead["utm"] = {} if form_id is None else {"source": "x", "campaign": "webinar"}
                enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
                resolve = field_resolver(lead, enrichment, context)
                expected = [rule.id for rule in ruleset.rules if rule.enabled and evaluate(rule.when, resolve)]
                fired = [rule.id for rule in score_lead(lead, enrichment, ruleset, context=context).fired]
                assert fired == expected, lead


UNLESS_RULES = """
name: unless parts that are rules' conditions
fit:
  - {id: corporate, when: {enrichment.email_type: corporate}, points: 50}
  - {id: hand_raise, when: {lead.message: {contains: call}}, points: 10, grade_at_least: A, qualifies: true}
  - id: quiet_student
    when: &student {lead.job_title: {regex: 'student'}}
    points: 0
    enabled: false
  - {id: web, when: &web {source.kind: web}, points: 0}
grades: {weights: {fit: 60, intent: 40}, thresholds: {A: 70, B: 50, C: 30}}
qualified:
  min_fit: 40
  min_intent: 0
  unless: {any: [*student, *web, {lead.form_id: {regex: test}}]}
"""


UNLESS_ONE_RULE = UNLESS_RULES.replace("unless: {any: [*student, *web,", "unless: *web #")  # not an `any`


@pytest.mark.parametrize("text", [UNLESS_RULES, UNLESS_ONE_RULE])
def test_unless_parts_that_are_rules_conditions_are_answered_by_those_rules_as_the_evaluator(text: str) -> None:
    ruleset = load_ruleset(text)
    assert ruleset.unless_plan is not None
    linked = [ruleset.compiled_rules[position][0].id for position in ruleset.unless_plan[0]]
    assert linked == ["web"]  # the disabled rule's condition is asked as an unless part of its own
    for kind in ("web", "api"):
        for title in ("Student", "CEO", None):
            for form in ("test-form", "demo", None):
                for message in ("call me", None):
                    lead: dict[str, Any] = {"email": "a@acme.com", "job_title": title, "form_id": form}
                    lead["message"] = message
                    context = {"source": {"kind": kind}, "is_test": False, "duplicate_of": None, "repeat_count": 0}
                    enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
                    score = score_lead(lead, enrichment, ruleset, context=context)
                    resolve = field_resolver(lead, enrichment, context)
                    assert ruleset.qualification.unless is not None
                    excluded = evaluate(ruleset.qualification.unless, resolve)
                    fired = [rule.id for rule in ruleset.rules if rule.enabled and evaluate(rule.when, resolve)]
                    expected_qualified = not excluded and ("hand_raise" in fired or score.fit >= 40)
                    assert [rule.id for rule in score.fired] == fired
                    assert score.qualified is expected_qualified, lead
                    floor = not excluded and "hand_raise" in fired
                    assert score.grade == ("A" if floor else ruleset.grade(score.fit, score.intent)), lead
