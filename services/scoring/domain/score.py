"""Scoring a lead against a ruleset: fit and intent points, a grade and the qualified gate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scoring.domain.conditions import context_resolver, field_values
from scoring.domain.enrichment import Enrichment
from scoring.domain.memo import Kept
from scoring.domain.ruleset import GRADES, FiredRule, Qualification, Ruleset

SCORE_MIN = 0
SCORE_MAX = 100


@dataclass(frozen=True)
class Score:
    """Fit and intent (each 0..100), the grade, whether the lead is qualified, and why."""

    fit: int
    intent: int
    grade: str
    qualified: bool
    fired: list[FiredRule]
    ruleset_version: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, for the lead.scored event and storage."""
        return {
            "fit": self.fit,
            "intent": self.intent,
            "grade": self.grade,
            "qualified": self.qualified,
            "fired": [rule.to_dict() for rule in self.fired],
            "ruleset_version": self.ruleset_version,
        }


# Score dicts kept per memo: a full memo starts again.
SCORE_MEMO_SIZE = 1024


class ScoreDicts:
    """Each distinct Score's `to_dict()`, kept: a ruleset gives few distinct scores (the same rules fire for
    many leads), so leads that score alike share one dict, for a caller that only reads it (the consumer's batch,
    which then serializes each distinct one once). Equal scores, equal dicts: the key is every field to_dict reads,
    the fired rules by identity (a ruleset's FiredRules are built once and never change; an entry keeps its own
    alive, so no id in a kept key can be another object's)."""

    def __init__(self, size: int = SCORE_MEMO_SIZE) -> None:
        self._kept: Kept[tuple[Any, ...], tuple[dict[str, Any], list[FiredRule]]] = Kept(size)
        self._by_lead: Kept[tuple[Any, ...], dict[str, Any]] = Kept(size)

    def of(self, score: Score) -> dict[str, Any]:
        fired = score.fired
        key = (score.fit, score.intent, score.grade, score.qualified, score.ruleset_version, *map(id, fired))
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept.keep(key, (score.to_dict(), fired))
        return kept[0]

    def of_lead(
        self,
        lead: Mapping[str, Any],
        enrichment: Enrichment,
        ruleset: Ruleset,
        *,
        context: Mapping[str, Any],
        fields: Mapping[str, Any],
    ) -> dict[str, Any]:
        """`self.of(score_lead(...))` for the same arguments, from memory when a lead the ruleset's tests could not
        tell apart from this one was scored before (`Ruleset.score_keys`: leads alike score alike)."""
        values = _values(lead, enrichment, ruleset, context, fields)
        key = ruleset.score_keys.key(values)
        if key is None:
            return self.of(_score(values, ruleset))
        key = (ruleset.version, key)
        kept = self._by_lead.get(key)
        if kept is None:
            kept = self._by_lead.keep(key, self.of(_score(values, ruleset)))
        return kept


def field_resolver(
    lead: Mapping[str, Any],
    enrichment: Enrichment,
    context: Mapping[str, Any],
    fields: Mapping[str, Any] | None = None,
) -> Any:
    """A function mapping a rule's canonical field path ("lead.utm.source", "source.kind", ...) to its value.

    `fields` is `enrichment.as_fields()` when the caller has it already (the handler needs it for features too)."""
    return context_resolver(lead, enrichment.as_fields() if fields is None else fields, _whole(enrichment), context)


def _whole(enrichment: Enrichment) -> dict[str, Any]:
    return {
        "enrichment.company": enrichment.company.to_dict() if enrichment.company else None,
        "enrichment.provider": enrichment.provider,
    }


def _clamp(points: int) -> int:
    return SCORE_MIN if points < SCORE_MIN else SCORE_MAX if points > SCORE_MAX else points


def _meets_minimums(gate: Qualification, fit: int, intent: int, grade: str) -> bool:
    return (
        fit >= gate.min_fit
        and intent >= gate.min_intent
        and (gate.min_grade is None or GRADES.index(grade) <= GRADES.index(gate.min_grade))
    )


def score_lead(
    lead: Mapping[str, Any],
    enrichment: Enrichment,
    ruleset: Ruleset,
    *,
    context: Mapping[str, Any],
    fields: Mapping[str, Any] | None = None,
) -> Score:
    """Apply every enabled rule; sum points per score, clamp each to 0..100, grade and qualify.

    A fired rule with `grade_at_least` lifts the grade to at least that, and one with `qualifies` qualifies
    the lead whatever the minimums, both only when `qualified.unless` does not hold: a hand-raise from a
    competitor, a student or a throwaway address keeps the grade its points give and stays unqualified.
    """
    return _score(_values(lead, enrichment, ruleset, context, fields), ruleset)


def _values(
    lead: Mapping[str, Any],
    enrichment: Enrichment,
    ruleset: Ruleset,
    context: Mapping[str, Any],
    fields: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Every field the ruleset tests, read once up front; its compiled rules then look them up in a dict. The
    enrichment's company as a whole is only made when a rule tests it (else no path is looked up in `_whole`)."""
    whole = _whole(enrichment) if ruleset.reads_whole else _NO_WHOLE
    return field_values(
        ruleset.tested_fields, lead, enrichment.as_fields() if fields is None else fields, whole, context
    )


_NO_WHOLE: dict[str, Any] = {}


def _score(values: dict[str, Any], ruleset: Ruleset) -> Score:
    """`score_lead` on the lead's tested fields' values."""
    resolve = values.__getitem__
    compiled = ruleset.compiled_rules
    groups = ruleset.rule_plan[0]
    positions: list[int] = []
    for position, holds, paths, when_missing in ruleset.gated_rules:
        for path in paths:
            if values[path] is not None:
                if holds(resolve):
                    positions.append(position)
                break
        else:  # none of the rule's fields: its answer for a lead without them (see Ruleset.gated_rules)
            if when_missing:
                positions.append(position)
    for path, index, members in groups:  # text-equality rules: one lookup per field (see Ruleset.rule_plan)
        value = values[path]
        if type(value) is str:
            text = value.strip()
            if text:
                positions += index.get(text.casefold(), ())
        elif value is not None:  # a number, a list...: each rule's own predicate, as the language answers
            positions += [position for position in members if compiled[position][1](resolve)]
    if groups:
        positions.sort()
    # One pass over the fired rules for both sums, the grade floors and the qualifying flag.
    fired: list[FiredRule] = []
    floors: list[str] = []
    fit = intent = 0
    qualifies = False
    for position in positions:
        rule, _holds, fired_rule = compiled[position]
        fired.append(fired_rule)
        if rule.score == "fit":
            fit += rule.points
        elif rule.score == "intent":
            intent += rule.points
        if rule.grade_at_least:
            floors.append(rule.grade_at_least)
        if rule.qualifies:
            qualifies = True
    fit = _clamp(fit)
    intent = _clamp(intent)
    grade = ruleset.grade(fit, intent)
    gate = ruleset.qualification
    # `qualified.unless` can only change the answer when a floor, a qualifying rule or the minimums are in play;
    # for the rest (most leads) it is not evaluated: the grade stays and the lead is not qualified either way.
    unless = ruleset.unless_plan
    in_play = bool(floors) or qualifies or _meets_minimums(gate, fit, intent, grade)
    excluded = (
        in_play
        and unless is not None
        and (any(position in positions for position in unless[0]) or (unless[1] is not None and unless[1](resolve)))
    )
    if not excluded and floors:
        grade = min([grade, *floors], key=GRADES.index)
    qualified = not excluded and (qualifies or _meets_minimums(gate, fit, intent, grade))
    return Score(
        fit=fit,
        intent=intent,
        grade=grade,
        qualified=qualified,
        fired=fired,
        ruleset_version=ruleset.version,
    )
