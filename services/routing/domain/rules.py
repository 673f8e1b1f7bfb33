"""Routing rules: an ordered list of `when` conditions and actions; the first match wins.

The rule model and how it reads the lead view; the document's grammar and loader are routing.domain.rules_loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from common.conditions import Condition, evaluate
from common.conditions.predicates import Predicate, compile_condition
from routing.domain.sla import SlaBlock

_MISSING = object()


# ---------------------------------------------------------------- view access


_PARTS: dict[str, tuple[str, ...]] = {}


def _parts(path: str) -> tuple[str, ...]:
    """A path's parts, split once per process (the code and the rules name a few dozen paths)."""
    parts = _PARTS.get(path)
    if parts is None:
        parts = tuple(path.split("."))
        if len(_PARTS) < 4096:
            _PARTS[path] = parts
    return parts


def lookup(view: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path in the lead view, or a private MISSING sentinel."""
    current: Any = view
    for part in _PARTS.get(path) or _parts(path):
        if type(current) is dict:  # the view's own maps: one look-up, not an isinstance and two
            current = current.get(part, _MISSING)
            if current is _MISSING:
                return _MISSING
        elif isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


def resolver(view: Mapping[str, Any]) -> Any:
    """Field values for conditions: the view's value at a path, None when absent."""

    def resolve(path: str) -> Any:
        value = lookup(view, path)
        return None if value is _MISSING else value

    return resolve


def score_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """The view's `score` from lead.scored data: the rule-based score with the conversion odds beside it."""
    score = dict(data.get("score") or {})
    if data.get("conversion") is not None and "conversion" not in score:
        score["conversion"] = dict(data["conversion"])
    return score


def quality_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """The view's `quality` (flags such as phone_unparsed): from the event, else from the lead itself.

    Only the flags: `quality.raw` holds what the person typed (personal data) and must live only in the lead,
    which erasure empties; rules and the timeline need the flags alone.
    """
    quality = data.get("quality")
    if quality is None and isinstance(data.get("lead"), Mapping):
        quality = data["lead"].get("quality")
    flags = quality.get("flags") if isinstance(quality, Mapping) else None
    return {"flags": [str(flag) for flag in flags]} if isinstance(flags, list) else {}


# ---------------------------------------------------------------- actions, options, rules


@dataclass(frozen=True)
class Action:
    """What to do with a matching lead."""

    kind: str  # "team" | "rep" | "nurture" | "account_owner"
    team: str | None = None
    method: str | None = None
    rep: str | None = None
    fallback: Action | None = None


@dataclass(frozen=True)
class RuleOptions:
    """How strictly reps must fit a lead, and what to do when nobody is working."""

    require_language: bool = False
    prefer_language: bool = False
    require_territory: bool = True
    segment: str | None = None
    outside_hours: str = "assign"


@dataclass(frozen=True)
class Rule:
    """One ordered routing rule."""

    id: str
    when: Condition
    action: Action
    options: RuleOptions = field(default_factory=RuleOptions)
    description: str = ""
    sla: SlaBlock | None = None  # this rule's SLA policy; None: the team's, else the defaults

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Whether this rule's `when` holds for the lead view."""
        return evaluate(self.when, resolver(view))


@dataclass(frozen=True)
class RoutingRules:
    """A validated, versioned rule set."""

    version: str
    rules: list[Rule]
    fallback_team: str
    fallback_method: str | None = None
    sticky_duplicates: bool = True
    default_options: RuleOptions = field(default_factory=RuleOptions)
    source: Mapping[str, Any] = field(default_factory=dict)

    # Compiled on first use and kept with the rules (the context caches them per version), not once per lead.
    @cached_property
    def compiled(self) -> tuple[Predicate, ...]:
        """Each rule's `when` compiled into a predicate of a resolver (common.conditions.predicates), in order."""
        return tuple(compile_condition(rule.when) for rule in self.rules)

    def first_match(self, view: Mapping[str, Any], *, start: int = 0) -> tuple[int, Rule] | None:
        """The first rule at or after index `start` whose condition holds, with its index."""
        resolve = resolver(view)
        compiled = self.compiled
        for index in range(start, len(compiled)):
            if compiled[index](resolve):
                return index, self.rules[index]
        return None

    def rule(self, rule_id: str | None) -> Rule | None:
        """The rule with this id (a decision names the rule that matched), if any."""
        return next((rule for rule in self.rules if rule.id == rule_id), None) if rule_id else None

    def referenced_teams(self) -> set[str]:
        """Team ids named anywhere in the rules (for checking against the roster)."""
        found = {self.fallback_team}
        for rule in self.rules:
            action: Action | None = rule.action
            while action is not None:
                if action.team:
                    found.add(action.team)
                action = action.fallback
        return found

    def referenced_reps(self) -> set[str]:
        """Rep ids named directly by rules."""
        found: set[str] = set()
        for rule in self.rules:
            action: Action | None = rule.action
            while action is not None:
                if action.rep:
                    found.add(action.rep)
                action = action.fallback
        return found
