"""Loading rulesets: errors name their line, the version is a content hash, the default ruleset is valid."""

from __future__ import annotations

import pytest

from scoring.domain import DEFAULT_RULESET_YAML, RulesetError, load_ruleset

pytestmark = pytest.mark.unit

VALID = """\
name: Test rules
version: "1"
fit:
  - id: work_email
    description: Work email
    when: {enrichment.email_type: corporate}
    points: 20
intent:
  - id: demo
    when: {lead.form_id: {regex: demo}}
    points: 40
grades:
  weights: {fit: 1, intent: 1}
  thresholds: {A: 75, B: 50, C: 25}
qualified: {min_fit: 10, min_intent: 10}
"""


def errors_of(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(RulesetError) as caught:
        load_ruleset(text)
    return caught.value.errors


def test_valid_ruleset_loads() -> None:
    ruleset = load_ruleset(VALID)
    assert ruleset.name == "Test rules"
    assert ruleset.declared_version == "1"
    assert [rule.id for rule in ruleset.fit_rules] == ["work_email"]
    assert [rule.id for rule in ruleset.intent_rules] == ["demo"]
    assert ruleset.source_text == VALID


def test_default_ruleset_is_valid_and_versioned() -> None:
    ruleset = load_ruleset(DEFAULT_RULESET_YAML)
    assert ruleset.fit_rules and ruleset.intent_rules
    assert len(ruleset.version) == 12
    assert all(ch in "0123456789abcdef" for ch in ruleset.version)


def test_same_content_same_version_even_with_other_comments_and_layout() -> None:
    reformatted = "# tuned by marketing ops\n" + VALID.replace("    points: 20", "    points: 20   # was 15").replace(
        "qualified: {min_fit: 10, min_intent: 10}", "qualified:\n  min_intent: 10\n  min_fit: 10"
    )
    assert load_ruleset(reformatted).version == load_ruleset(VALID).version


def test_changed_content_changes_version() -> None:
    base = load_ruleset(VALID).version
    assert load_ruleset(VALID.replace("points: 20", "points: 25")).version != base
    assert load_ruleset(VALID.replace("regex: demo", "regex: trial")).version != base
    assert load_ruleset(VALID.replace("A: 75", "A: 80")).version != base


def test_unknown_operator_names_its_line() -> None:
    text = VALID.replace("{enrichment.email_type: corporate}", "{enrichment.email_type: {equal: corporate}}")
    errors = errors_of(text)
    assert errors[0][0] == 6
    assert "unknown operator 'equal'" in errors[0][1]
    assert "did you mean 'equals'" in errors[0][1]


def test_error_message_reads_line_colon_problem() -> None:
    text = VALID.replace("{enrichment.email_type: corporate}", "{enrichment.email_type: {equal: corporate}}")
    with pytest.raises(RulesetError) as caught:
        load_ruleset(text)
    assert str(caught.value).startswith("line 6: unknown operator 'equal'")


def test_invalid_regex_names_its_line() -> None:
    errors = errors_of(VALID.replace("regex: demo", "regex: '(demo'"))
    assert errors[0][0] == 10
    assert "invalid regex '(demo'" in errors[0][1]


def test_unknown_top_level_key_names_its_line() -> None:
    errors = errors_of(VALID + "weights: {fit: 1}\n")
    assert errors == [(16, "unknown key 'weights' in the ruleset")]


def test_duplicate_rule_id_across_fit_and_intent_names_both_lines() -> None:
    errors = errors_of(VALID.replace("id: demo", "id: work_email"))
    assert errors == [(9, "duplicate rule id 'work_email' (first on line 4)")]


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"),
    [
        ("points: 20", "points: twenty", 7, "points must be a whole number"),
        ("points: 20", "points: 1.5", 7, "points must be a whole number"),
        ("points: 20", "points: 500", 7, "points must be between -100 and 100"),
        ("A: 75", "A: high", 14, "grades.thresholds.A must be a number"),
        ("A: 75", "A: 40", 14, "A (40) must be above B (50)"),
        ("min_fit: 10", "min_fit: '10'", 15, "qualified.min_fit must be a whole number"),
        ("    when: {lead.form_id: {regex: demo}}", "    when: [lead.form_id]", 10, "must be a mapping"),
        (
            "{enrichment.email_type: corporate}",
            "{enrichment.email_type: corprate}",
            6,
            "did you mean 'corporate'",
        ),
        ("{enrichment.email_type: corporate}", "{lead.countyr: DE}", 6, "unknown field 'lead.countyr'"),
        ("{enrichment.email_type: corporate}", "{lead.country: Germany}", 6, "not an ISO 3166 alpha-2"),
        # A bare list is one_of (the shared language, as routing always read it); its items are still checked.
        ("{enrichment.email_type: corporate}", "{lead.country: [DE, Germany]}", 6, "not an ISO 3166 alpha-2"),
        (
            "{enrichment.email_type: corporate}",
            "{lead.phone: {exists: yes please}}",
            6,
            "must be true or false",
        ),
        (
            "{enrichment.email_type: corporate}",
            "{context.repeat_count: {range: {min: 5, max: 1}}}",
            6,
            "min 5 is greater than max 1",
        ),
        ("{enrichment.email_type: corporate}", "{any: []}", 6, "'any' must be a non-empty list"),
        ("    description: Work email", "    descripton: Work email", 5, "did you mean 'description'"),
    ],
)
def test_wrong_types_and_values_name_their_line(old: str, new: str, line: int, fragment: str) -> None:
    assert old in VALID
    errors = errors_of(VALID.replace(old, new))
    assert any(err_line == line and fragment in problem for err_line, problem in errors), errors


def test_every_error_is_reported_at_once_in_line_order() -> None:
    text = (
        VALID.replace("points: 20", "points: lots")
        .replace("regex: demo", "regex: '['")
        .replace("name: Test rules", "name: Test rules\ncolour: blue")
    )
    lines = [line for line, _ in errors_of(text)]
    assert lines == [2, 8, 11]


def test_missing_required_parts() -> None:
    problems = [problem for _, problem in errors_of("name: x\nfit: []\n")]
    assert "the ruleset is missing 'grades'" in problems
    assert "the ruleset is missing 'qualified'" in problems


def test_duplicate_yaml_key_names_both_lines() -> None:
    text = VALID.replace("    points: 20\n", "    points: 20\n    points: 30\n", 1)
    assert (8, "duplicate key 'points' in a fit rule (first on line 7)") in errors_of(text)


def test_yaml_syntax_error_names_its_line() -> None:
    errors = errors_of("name: x\nfit: [\n  {id: a\n")
    assert errors[0][0] is not None
    assert "not valid YAML" in errors[0][1]


@pytest.mark.parametrize("text", ["", "just words", "- a\n- list\n"])
def test_not_a_ruleset_at_all(text: str) -> None:
    assert errors_of(text)


def test_yaml_anchors_can_share_a_list_between_rules() -> None:
    text = VALID.replace(
        "    when: {enrichment.email_type: corporate}",
        "    when: {lead.country: {one_of: &markets [DE, AT, CH]}}",
    ).replace(
        "    when: {lead.form_id: {regex: demo}}",
        "    when: {enrichment.company.country: {one_of: *markets}}",
    )
    ruleset = load_ruleset(text)
    assert [rule.id for rule in ruleset.rules] == ["work_email", "demo"]


def test_alias_bomb_is_refused_before_it_expands() -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefg", "bcdefgh", strict=False):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    problems = [problem for _, problem in errors_of("\n".join(levels) + "\n")]
    assert problems == ["the ruleset is too large (over 50000 values once aliases expand)"]


def test_explicit_yaml_tags_are_refused_with_their_line() -> None:
    errors = errors_of(VALID.replace("points: 20", "points: !!python/object:os.system 20"))
    assert errors == [(7, "unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'")]
