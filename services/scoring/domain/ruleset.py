"""A scoring ruleset as the domain uses it: rules, grade thresholds, the qualification gate.

Loading one from YAML (with every problem's line) is scoring.domain.ruleset_loader; the YAML format is
documented in the header of services/scoring/default_ruleset.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from common.conditions.predicates import Predicate, compile_condition, condition_fields
from scoring.domain.answers import ScoreKeys
from scoring.domain.conditions import AnyOf, Condition, FieldTest, describe
from scoring.domain.memo import memoized

GRADES: tuple[str, ...] = ("A", "B", "C", "D")
SCORE_KINDS: tuple[str, ...] = ("fit", "intent")
TOP_LEVEL_KEYS: tuple[str, ...] = ("name", "version", "description", "fit", "intent", "grades", "qualified")
RULE_KEYS: tuple[str, ...] = ("id", "description", "when", "points", "enabled", "grade_at_least", "qualifies")
GRADE_KEYS: tuple[str, ...] = ("weights", "thresholds")
QUALIFIED_KEYS: tuple[str, ...] = ("min_fit", "min_intent", "min_grade", "unless")
MAX_POINTS = 100


class RulesetError(Exception):
    """The ruleset is invalid; `errors` holds (line number, problem) pairs, in line order."""

    def __init__(self, errors: list[tuple[int | None, str]]) -> None:
        self.errors = sorted(errors, key=lambda item: (item[0] is None, item[0] or 0))
        super().__init__("\n".join(f"line {ln}: {msg}" if ln is not None else msg for ln, msg in self.errors))


@dataclass(frozen=True)
class Rule:
    """One scoring rule: when `when` holds, `points` go to its score ("fit" or "intent")."""

    id: str
    score: str
    when: Condition
    points: int
    description: str | None = None
    enabled: bool = True
    line: int | None = None
    # A hand-raise (a demo, a quote, a call back) is hot whatever its points add up to: when the rule fires
    # the grade is at least this and the lead is qualified, unless `qualified.unless` holds (see score_lead).
    grade_at_least: str | None = None
    qualifies: bool = False


@dataclass(frozen=True)
class FiredRule:
    """A rule whose condition held, and what it contributed."""

    id: str
    score: str
    points: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"id": self.id, "score": self.score, "points": self.points, "reason": self.reason}


@dataclass(frozen=True)
class Qualification:
    """The gate for `qualified`: minimum fit and intent, optional minimum grade, and an exclusion."""

    min_fit: int
    min_intent: int
    min_grade: str | None = None
    unless: Condition | None = None


@dataclass(frozen=True)
class Ruleset:
    """A validated ruleset; `version` is a short content hash, so equal content means equal version."""

    version: str
    source_text: str
    name: str
    declared_version: str | None
    fit_rules: tuple[Rule, ...]
    intent_rules: tuple[Rule, ...]
    fit_weight: float
    intent_weight: float
    thresholds: tuple[tuple[str, float], ...]  # (grade, minimum combined score), best grade first
    qualification: Qualification
    description: str | None = field(default=None, compare=False)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Fit rules then intent rules, in file order."""
        return self.fit_rules + self.intent_rules

    # Compiled on first use and kept with the ruleset (the handler keeps recent rulesets), not once per lead.
    @cached_property
    def compiled_rules(self) -> tuple[tuple[Rule, Predicate, FiredRule], ...]:
        """The enabled rules in order, each with its condition compiled and what it contributes when it fires."""
        return tuple((rule, compile_condition(rule.when), _fired(rule)) for rule in self.rules if rule.enabled)

    @cached_property
    def rule_plan(self) -> RulePlan:
        """`compiled_rules` split for a lead's evaluation (`score_lead`): per field, the rules that only ask whether
        its text equals one of some texts, indexed by folded text (one dict lookup answers them all); the others
        one predicate each. Positions are those of `compiled_rules`."""
        by_field: dict[str, tuple[dict[str, list[int]], list[int]]] = {}
        others: list[tuple[int, Predicate]] = []
        for position, (rule, holds, _fired) in enumerate(self.compiled_rules):
            texts = _equal_texts(rule.when)
            if texts is None:
                others.append((position, holds))
                continue
            index, members = by_field.setdefault(rule.when.field, ({}, []))  # type: ignore[union-attr]
            members.append(position)
            for text in texts:
                index.setdefault(text, []).append(position)
        groups = tuple(
            (path, {text: tuple(found) for text, found in index.items()}, tuple(members))
            for path, (index, members) in by_field.items()
        )
        return groups, tuple(others)

    @cached_property
    def gated_rules(self) -> tuple[tuple[int, Predicate, tuple[str, ...], bool], ...]:
        """`rule_plan`'s other rules, each with the fields it tests and what it answers when every one of them is
        missing: a predicate answers from its fields' values alone, so a lead without any of them gets that answer
        without the rule's tests being run (most leads lack most of the message, page and campaign fields). Each
        predicate remembers its answers by the values it read (scoring.domain.memo): titles, forms and pages repeat."""
        compiled = self.compiled_rules
        return tuple(
            (
                position,
                memoized(compiled[position][0].when, holds),
                tuple(sorted(condition_fields(compiled[position][0].when))),
                bool(holds(_nothing)),
            )
            for position, holds in self.rule_plan[1]
        )

    @cached_property
    def unless_plan(self) -> tuple[tuple[int, ...], Predicate | None] | None:
        """`qualified.unless` as `score_lead` asks it (None: the ruleset has none): the positions of the rules whose
        whole condition is one of its `any` parts (such a part holds exactly when that rule fired: the default
        ruleset's student and competitor rules are reused there), and the other parts as one predicate (None:
        no others). A lead's rules are already answered when `unless` is asked, so those parts cost no tests."""
        unless = self.qualification.unless
        if unless is None:
            return None
        linked: list[int] = []
        rest: list[Condition] = []
        for part in unless.parts if isinstance(unless, AnyOf) else (unless,):
            position = next((p for p, (rule, _, _) in enumerate(self.compiled_rules) if rule.when == part), None)
            if position is None:
                rest.append(part)
            else:
                linked.append(position)
        remainder = None if not rest else compile_condition(rest[0] if len(rest) == 1 else AnyOf(tuple(rest)))
        return tuple(linked), remainder

    @cached_property
    def tested_fields(self) -> tuple[str, ...]:
        """Every field path the enabled rules and `qualified.unless` test, each once (in a stable order)."""
        conditions = [rule.when for rule in self.rules if rule.enabled]
        if self.qualification.unless is not None:
            conditions.append(self.qualification.unless)
        return tuple(sorted(frozenset().union(*(condition_fields(c) for c in conditions))))

    @cached_property
    def score_keys(self) -> ScoreKeys:
        """What the rules and `qualified.unless` can tell apart in a lead's tested fields: leads with equal keys score
        alike (scoring.domain.answers)."""
        conditions = [rule.when for rule, _holds, _fired in self.compiled_rules]
        if self.qualification.unless is not None:
            conditions.append(self.qualification.unless)
        return ScoreKeys(self.tested_fields, conditions)

    @cached_property
    def reads_whole(self) -> bool:
        """Whether a rule tests the enrichment's company or provider as a whole (score.py's `_whole`)."""
        return any(path in _WHOLE_PATHS for path in self.tested_fields)

    def combined(self, fit: int, intent: int) -> float:
        """The weighted mean of fit and intent that grades are cut from."""
        return (self.fit_weight * fit + self.intent_weight * intent) / (self.fit_weight + self.intent_weight)

    def grade(self, fit: int, intent: int) -> str:
        """Best grade whose threshold the combined score reaches; "D" below all thresholds."""
        key = (fit, intent)
        grade = self._grades.get(key)
        if grade is None:
            combined = self.combined(fit, intent)
            grade = next((grade for grade, minimum in self.thresholds if combined >= minimum), "D")
            if len(self._grades) < _GRADES_KEPT:
                self._grades[key] = grade
        return grade

    @cached_property
    def _grades(self) -> dict[tuple[int, int], str]:
        """Grades worked out, by (fit, intent): scores are clamped to 0..100, so a few thousand at most."""
        return {}


# The paths score.py's `_whole` holds: read from the Enrichment itself, not from its `as_fields()`.
_WHOLE_PATHS = frozenset(("enrichment.company", "enrichment.provider"))

# (fit, intent) pairs whose grade a ruleset keeps: every pair of clamped scores (0..100 each).
_GRADES_KEPT = 101 * 101

RulePlan = tuple[
    tuple[tuple[str, dict[str, tuple[int, ...]], tuple[int, ...]], ...], tuple[tuple[int, "Predicate"], ...]
]


def _nothing(path: str) -> None:
    """A resolver for a lead that has none of the fields asked for."""
    return None


def _equal_texts(condition: Condition) -> frozenset[str] | None:
    """The folded texts of a lone `equals` / `one_of` test without numbers (what its compiled predicate decides
    for a text value by set membership), else None."""
    if not isinstance(condition, FieldTest):
        return None
    if condition.operator == "equals" and condition.argument.number is None:
        return frozenset((condition.argument.folded,))
    if condition.operator == "one_of" and all(option.number is None for option in condition.argument):
        return frozenset(option.folded for option in condition.argument)
    return None


def _fired(rule: Rule) -> FiredRule:
    reason = rule.description or describe(rule.when)
    return FiredRule(id=rule.id, score=rule.score, points=rule.points, reason=reason)
