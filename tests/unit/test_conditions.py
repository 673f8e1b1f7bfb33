"""The one condition language of scoring rulesets and routing rules (common.conditions), seen from both sides."""

from __future__ import annotations

from typing import Any

import pytest

import common.conditions as package
from common.conditions import compile_regex, compiler, documents, operators, paths, regex
from routing.domain import RulesError, load_rules
from routing.domain.rules import quality_view, score_view
from scoring.domain import RulesetError, enrich, load_ruleset, score_lead

pytestmark = pytest.mark.unit

# Exponential backtracking in Python's `re` on a long word without a match; linear in RE2.
EVIL = r"^(\w+\s?)*$"
CRAFTED = "a" * 9_999 + "!"  # 10,000 characters: all of it is matched


def scoring_rule(when: str) -> str:
    """A ruleset with one fit rule `r` (YAML flow text for `when`) on line 5."""
    return f"""name: t
fit:
  - id: r
    points: 10
    when: {when}
grades: {{weights: {{fit: 1, intent: 1}}, thresholds: {{A: 75, B: 50, C: 25}}}}
qualified: {{min_fit: 0, min_intent: 0}}
"""


def routing_rule(when: str) -> str:
    """Rules with one rule `r` (to rep r1) whose `when` is on line 5."""
    return f"""fallback_team: sales
rules:
  - id: r
    action: {{rep: r1}}
    when: {when}
"""


def scores(when: str, lead: dict[str, Any], **context: Any) -> bool:
    """Whether the scoring rule fires for the lead."""
    enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
    base = {"source": {"kind": "web"}, "is_test": False, "duplicate_of": None, "repeat_count": 0}
    score = score_lead(lead, enrichment, load_ruleset(scoring_rule(when)), context=base | context)
    return [rule.id for rule in score.fired] == ["r"]


def routes(when: str, scored: dict[str, Any]) -> bool:
    """Whether the routing rule matches the lead view routing builds from lead.scored data."""
    view = {
        "lead": scored.get("lead", {}),
        "enrichment": scored.get("enrichment", {}),
        "score": score_view(scored),
        "source": scored.get("source", {}),
        "is_test": False,
        "duplicate_of": None,
        "quality": quality_view(scored),
    }
    return load_rules(routing_rule(when)).first_match(view) is not None


@pytest.mark.timeout(60)  # a guard: Python's `re` would take hours on this input
def test_a_catastrophic_pattern_on_a_crafted_10k_message_is_answered_in_both_services() -> None:
    assert compile_regex(EVIL).search(CRAFTED) is False
    assert compile_regex(EVIL).search("hello big world") is True
    assert scores(f"{{lead.message: {{regex: '{EVIL}'}}}}", {"message": CRAFTED}) is False
    assert scores(f"{{lead.message: {{regex: '{EVIL}'}}}}", {"message": "call me back"}) is True
    assert routes(f"{{lead.message: {{regex: '{EVIL}'}}}}", {"lead": {"message": CRAFTED}}) is False
    assert routes(f"{{lead.message: {{regex: '{EVIL}'}}}}", {"lead": {"message": "call me back"}}) is True


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("demo(?=.*pricing)", "lookahead and lookbehind are not supported"),
        ("(?<!no )demo", "lookahead and lookbehind are not supported"),
        (r"(demo)\\1", "backreferences are not supported"),
    ],
)
def test_lookaround_and_backreferences_are_refused_with_their_line_in_both_services(pattern: str, why: str) -> None:
    with pytest.raises(RulesetError) as scoring_refused:
        load_ruleset(scoring_rule(f'{{lead.message: {{regex: "{pattern}"}}}}'))
    [(line, problem)] = scoring_refused.value.errors
    assert line == 5 and "invalid regex" in problem and why in problem
    with pytest.raises(RulesError) as routing_refused:
        load_rules(routing_rule(f'{{lead.message: {{regex: "{pattern}"}}}}'))
    [error] = routing_refused.value.errors
    assert error.startswith("rules[0].when.lead.message.regex: invalid regex") and why in error
    assert error.endswith("(line 5)")


def test_the_same_mistake_gets_the_same_message_in_both_services() -> None:
    with pytest.raises(RulesetError) as scoring_refused:
        load_ruleset(scoring_rule("{source.kind: {equal: web}}"))
    with pytest.raises(RulesError) as routing_refused:
        load_rules(routing_rule("{source.kind: {equal: web}}"))
    [(line, problem)] = scoring_refused.value.errors
    assert (line, problem.split(" (did you mean")[0]) == (5, "unknown operator 'equal'")
    assert routing_refused.value.errors == [f"rules[0].when.source.kind: {problem} (line 5)"]


def test_both_services_use_the_same_paths_and_the_old_scoring_paths_still_work() -> None:
    lead = {"message": "hi"}
    assert scores("{source.kind: web}", lead) is True
    assert scores("{context.source.kind: web}", lead) is True  # the first scoring dialect, as an alias
    assert scores("{repeat_count: {range: {min: 1}}}", lead, repeat_count=1) is True
    assert routes("{source.kind: web}", {"source": {"kind": "web"}}) is True
    assert routes("{context.source.kind: web}", {"source": {"kind": "web"}}) is True
    # What only routing can know is refused in scoring with the reason, not silently never matched.
    with pytest.raises(RulesetError, match=r"'score\.grade' is not known to scoring"):
        load_ruleset(scoring_rule("{score.grade: A}"))


@pytest.mark.parametrize(
    ("when", "value", "expected"),
    [
        ("{lead.custom.seats: 50}", "50", True),  # forms send numbers as text: compared by value
        ("{lead.custom.seats: '50'}", 50, True),
        ("{lead.custom.seats: {range: {gte: 40}}}", "50", True),
        ("{lead.custom.seats: true}", 1, False),  # a count of 1 is not `true`
        ("{lead.custom.seats: {contains: Ent}}", ["Enterprise", "trial"], False),  # members, not substrings
        ("{lead.custom.seats: {contains: enterprise}}", ["Enterprise", "trial"], True),
    ],
)
def test_comparisons_are_the_same_in_both_services(when: str, value: Any, expected: bool) -> None:
    lead = {"custom": {"seats": value}}
    assert scores(when, lead) is expected
    assert routes(when, {"lead": lead}) is expected


def test_routing_rules_read_conversion_odds_and_quality_flags() -> None:
    scored = {
        "score": {"grade": "B", "qualified": True},
        "conversion": {"probability": 0.42, "status": "ok", "outcomes_seen": 80},
        "quality": {"flags": ["phone_unparsed", "submitted_at_clamped"]},
    }
    assert routes("{score.conversion.probability: {range: {gte: 0.4}}}", scored) is True
    assert routes("{score.conversion.probability: {range: {gt: 0.5}}}", scored) is False
    assert routes("{quality.flags: {contains: phone_unparsed}}", scored) is True
    assert routes("{quality.flags: {one_of: [email_typo, submitted_at_clamped]}}", scored) is True
    assert routes("{quality.flags: {contains: email_typo}}", scored) is False
    # Flags carried inside the lead (before the event carries them on top) are read too; none, no match.
    assert routes("{quality.flags: {contains: phone_unparsed}}", {"lead": {"quality": {"flags": ["phone_unparsed"]}}})
    assert routes("{not: {quality.flags: {exists: true}}}", {}) is True
    assert routes("{score.conversion.probability: {range: {gte: 0}}}", {"conversion": {"probability": None}}) is False
    # Scoring rules read the same flags under the same path.
    assert scores("{quality.flags: {contains: phone_unparsed}}", {"quality": {"flags": ["phone_unparsed"]}})


def _alias_bomb() -> str:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefg", "bcdefgh", strict=False):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    return "\n".join(levels) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands_in_both_services() -> None:
    with pytest.raises(RulesError) as routing_refused:
        load_rules(_alias_bomb())
    assert routing_refused.value.errors == [
        "<document>: the rules document is too large (over 50000 values once aliases expand)"
    ]
    with pytest.raises(RulesetError, match="too large"):
        load_ruleset(_alias_bomb())
    # Small anchors stay usable, as the scoring ruleset has always allowed.
    shared = "fallback_team: s\nrules:\n  - {when: {lead.country: &m [DE, AT]}, action: {rep: a}}\n"
    shared += "  - {when: {enrichment.company.country: *m}, action: {rep: b}}\n"
    assert [rule.id for rule in load_rules(shared).rules] == ["rule-1", "rule-2"]


@pytest.mark.parametrize("deep", ["rules: " + "[" * 3000 + "]" * 3000 + "\n", "rules: " + "[" * 70 + "]" * 70 + "\n"])
def test_a_document_nested_too_deep_is_refused_not_a_recursion_error_in_both_services(deep: str) -> None:
    with pytest.raises(RulesetError, match="nested deeper than 64 levels"):
        load_ruleset(deep)
    with pytest.raises(RulesError, match="nested deeper than 64 levels"):
        load_rules(deep)


def test_the_language_is_one_package_with_a_module_per_role_and_its_old_imports_still_work() -> None:
    # `from common.conditions import X` keeps working for every name the single module had.
    assert package.evaluate is operators.evaluate and package.ConditionCompiler is compiler.ConditionCompiler
    assert package.compile_regex is regex.compile_regex and package.DocumentRefused is documents.DocumentRefused
    assert package.Catalog is paths.Catalog
    assert all(hasattr(package, name) for name in package.__all__)
    for module in (compiler, documents, operators, paths, regex):
        assert module.__file__ is not None
        with open(module.__file__, encoding="utf-8") as source:
            assert len(source.read().splitlines()) <= 400, module.__name__
