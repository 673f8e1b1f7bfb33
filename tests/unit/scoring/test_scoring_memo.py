"""A rule remembered by the values it read answers exactly what the evaluator answers, repeat after repeat."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from common.conditions import AllOf, AnyOf, Condition, FieldTest, Not, Scalar, compile_regex, evaluate
from common.conditions.predicates import compile_condition
from scoring.domain import DEFAULT_RULESET_YAML, enrich, load_ruleset, score_lead
from scoring.domain import memo as memo_module
from scoring.domain.memo import MEMO_MAX_TEXT, memoized
from scoring.domain.score import field_resolver

pytestmark = pytest.mark.unit

A_VALUES: list[Any] = [
    None,
    "",
    "  ",
    "Call me",
    "call   ME back",
    "Student",
    "DE",
    "de ",
    "x" * (MEMO_MAX_TEXT + 1) + "call me",
    50,
    True,
    1,
    ["call me"],
    {"a": "call me"},
]
B_VALUES: list[Any] = [None, "de", "Werkstudent", " ", 1, "call me"]


def _s(text: str) -> Scalar:
    return Scalar(text, text)


CALL, STUDENT = compile_regex(r"call\s+me"), compile_regex(r"\b(student|werkstudent)\b")
CONDITIONS: list[Condition] = [
    FieldTest("a", "regex", CALL),
    FieldTest("a", "exists", True),
    Not(FieldTest("a", "regex", CALL)),
    AnyOf((FieldTest("a", "regex", CALL), FieldTest("b", "regex", STUDENT), FieldTest("a", "regex", STUDENT))),
    AnyOf(
        (
            FieldTest("b", "equals", _s("DE")),
            AllOf((FieldTest("a", "contains", _s("me")), Not(FieldTest("b", "exists", True)))),
        )
    ),
    AllOf((FieldTest("a", "regex", STUDENT), Not(FieldTest("b", "equals", _s("de"))))),
]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_a_remembered_condition_answers_as_the_evaluator_seen_or_not(condition: Condition) -> None:
    remembered = memoized(condition, compile_condition(condition))
    pairs = list(itertools.product(A_VALUES, B_VALUES))
    for a, b in pairs + pairs[::-1] + pairs:  # each pair first unseen, then answered from memory
        resolve = {"a": a, "b": b}.get
        assert remembered(resolve) is evaluate(condition, resolve), (condition, a, b)


def test_a_full_memo_starts_again_and_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memo_module, "MEMO_SIZE", 3)
    condition = FieldTest("a", "regex", CALL)
    remembered = memoized(condition, compile_condition(condition))
    for text in ["call me", "no", "call  me now", "maybe", "no", "call me"] * 3:
        resolve = {"a": text}.get
        assert remembered(resolve) is evaluate(condition, resolve), text


TITLES = ["Head of Sales", "Werkstudent Vertrieb", "Student", "CEO", None, "", "Intern", "VP Marketing"]
MESSAGES = [None, "Please send pricing", "Can we book a demo?", "just browsing", "Call me back about a quote"]
PAGES = [None, "https://acme.example/pricing", "https://acme.example/blog/post", "https://acme.example/demo"]
FORMS = [None, "contact", "newsletter", "demo-request"]
EMAILS = ["jane@acme.example", "joe@uni.edu", "kim@gmail.com", "lee@competitor-one.example", "max@school.ac.uk"]


def test_repeated_leads_fire_the_rules_the_evaluator_fires() -> None:
    """The default ruleset over leads whose titles, messages, pages and forms repeat in every combination."""
    ruleset = load_ruleset(DEFAULT_RULESET_YAML)
    context = {"source": {"kind": "web"}, "is_test": False, "duplicate_of": None, "repeat_count": 0}
    leads = [
        {"job_title": t, "message": m, "page_url": p, "form_id": f, "email": e, "country": "DE", "utm": {}}
        for t, m, p, f, e in itertools.product(TITLES, MESSAGES, PAGES, FORMS, EMAILS)
    ]
    for lead in leads + leads[::-1]:
        enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
        resolve = field_resolver(lead, enrichment, context)
        expected = [rule.id for rule in ruleset.rules if rule.enabled and evaluate(rule.when, resolve)]
        assert [rule.id for rule in score_lead(lead, enrichment, ruleset, context=context).fired] == expected, lead


def test_a_short_text_is_tested_once_other_values_every_time() -> None:
    condition = FieldTest("a", "regex", CALL)
    compiled = compile_condition(condition)
    calls: list[Any] = []

    def counted(resolve: Any) -> bool:
        calls.append(resolve("a"))
        return compiled(resolve)

    remembered = memoized(condition, counted)
    long_text = "x" * (MEMO_MAX_TEXT + 1)
    for value in ["call me", "call me", 50, 50, long_text, long_text, None, None]:
        remembered({"a": value}.get)
    assert calls == ["call me", 50, 50, long_text, long_text, None, None]
