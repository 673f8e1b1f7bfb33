"""Routing rules: an ordered list of `when` conditions and actions; the first match wins.

Document shape (YAML or JSON)::

    fallback_team: sdr            # required: where a lead goes when no rule matches
    fallback_method: null         # null = the team's own method
    sticky_duplicates: true       # a duplicate goes back to the rep holding the original, if eligible
    defaults: {require_territory: true}   # options merged under every rule's own options
    rules:
      - id: hot                   # unique; default rule-<n>
        description: A and B leads go to the account executives
        when:                     # all entries must hold; missing `when` matches everything
          score.grade: {one_of: [A, B]}      # field path into the lead view, then operators
          score.qualified: true              # a bare scalar means equals, a bare list one_of
          any:                                # combinators: all / any (lists), not (one condition)
            - lead.country: {one_of: [US, CA]}
            - enrichment.company.employee_band: {regex: "^(1000|5000)"}
        action: {team: sales, method: weighted}
        options: {require_language: true, outside_hours: hold}

Operators: equals, one_of, contains (substring or list member), regex (search), range ({gte, gt, lte, lt}
or [min, max] inclusive), exists (true/false), not (field-level negation). String comparison ignores case.
A missing field satisfies nothing except `exists: false` and negations.

Actions: {team: id, method: round_robin|weighted|least_loaded} | {rep: id} | {nurture: true} |
{account_owner: true}. Any action except nurture may carry `fallback: <action>`, used when it names nobody.
An account_owner action with no owner and no fallback passes the lead on to the next matching rule.

Options: require_language (false: only reps speaking the lead's language), prefer_language (false: speakers
first, anyone if none is free), require_territory (true), segment (null: only reps serving it),
outside_hours: assign (nobody working -> pick among reps who are only outside their hours; default) |
hold (wait for the first of them to start) | queue (to the team queue). `hold_outside_hours: true` is
shorthand for `outside_hours: hold`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import yaml

from routing.domain.reps import METHODS

# Roots of the lead view; a path starting elsewhere is almost surely a typo that would never match.
VIEW_ROOTS = ("lead", "enrichment", "score", "source", "is_test", "duplicate_of")
OPERATORS = ("equals", "one_of", "contains", "regex", "range", "exists", "not")
OUTSIDE_HOURS_MODES = ("assign", "hold", "queue")
_MAX_REGEX = 500
_MISSING = object()


class RulesError(ValueError):
    """The rules document is invalid; `errors` lists every problem as 'path: message'."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader where only true/false are booleans, so country NO and language 'on' stay strings."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """Parse YAML (or JSON) where only true/false are booleans (YAML 1.2 style)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - _YamlLoader is a SafeLoader


# ---------------------------------------------------------------- view access


def lookup(view: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path in the lead view, or a private MISSING sentinel."""
    current: Any = view
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a rule saying `qualified: true` must not match a count of 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(_fold(a) == _fold(b))


# ---------------------------------------------------------------- conditions


class Condition:
    """A compiled `when` clause."""

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Whether the lead view satisfies this condition."""
        raise NotImplementedError


@dataclass(frozen=True)
class Always(Condition):
    """Matches every lead (a rule without `when`)."""

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Always true."""
        return True


@dataclass(frozen=True)
class AllOf(Condition):
    """Every part holds."""

    parts: tuple[Condition, ...]

    def matches(self, view: Mapping[str, Any]) -> bool:
        """True when all parts match."""
        return all(part.matches(view) for part in self.parts)


@dataclass(frozen=True)
class AnyOf(Condition):
    """At least one part holds."""

    parts: tuple[Condition, ...]

    def matches(self, view: Mapping[str, Any]) -> bool:
        """True when any part matches."""
        return any(part.matches(view) for part in self.parts)


@dataclass(frozen=True)
class Not(Condition):
    """The part does not hold."""

    part: Condition

    def matches(self, view: Mapping[str, Any]) -> bool:
        """True when the part does not match."""
        return not self.part.matches(view)


@dataclass(frozen=True)
class FieldTest(Condition):
    """One operator applied to one field of the view."""

    path: str
    operator: str
    argument: Any

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Apply the operator to the field's value."""
        value = lookup(view, self.path)
        if self.operator == "exists":
            present = value is not _MISSING and value is not None and value != ""
            return present == self.argument
        if self.operator == "not":
            return not self.argument.matches(view)
        if value is _MISSING or value is None:
            return False
        return _apply(self.operator, self.argument, value)


def _apply(operator: str, argument: Any, value: Any) -> bool:
    if operator == "equals":
        return _same(value, argument)
    if operator == "one_of":
        return any(_same(value, option) for option in argument)
    if operator == "contains":
        if isinstance(value, str):
            return isinstance(argument, str) and argument.casefold() in value.casefold()
        if isinstance(value, Sequence | frozenset | set):
            return any(_same(item, argument) for item in value)
        return False
    if operator == "regex":
        return isinstance(value, str | int | float) and argument.search(str(value)) is not None
    if operator == "range":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        low, low_inclusive, high, high_inclusive = argument
        if low is not None and (value < low or (value == low and not low_inclusive)):
            return False
        return not (high is not None and (value > high or (value == high and not high_inclusive)))
    raise AssertionError(f"unhandled operator {operator}")  # compile rejects unknown operators


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

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Whether this rule's `when` holds for the lead view."""
        return self.when.matches(view)


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

    def first_match(self, view: Mapping[str, Any], *, start: int = 0) -> tuple[int, Rule] | None:
        """The first rule at or after index `start` whose condition holds, with its index."""
        for index in range(start, len(self.rules)):
            if self.rules[index].matches(view):
                return index, self.rules[index]
        return None

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


class _Compiler:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    # conditions -------------------------------------------------------------

    def condition(self, raw: Any, where: str) -> Condition:
        if raw is None:
            return Always()
        if isinstance(raw, Sequence) and not isinstance(raw, str):
            # A list at condition level reads naturally as "all of these".
            return AllOf(tuple(self.condition(item, f"{where}[{i}]") for i, item in enumerate(raw)))
        if not isinstance(raw, Mapping):
            self.error(where, f"expected a mapping of field paths to tests, got {raw!r}")
            return Always()
        parts: list[Condition] = []
        for key, value in raw.items():
            key_where = f"{where}.{key}"
            if key in ("all", "any"):
                if not isinstance(value, Sequence) or isinstance(value, str) or not value:
                    self.error(key_where, "expected a non-empty list of conditions")
                    continue
                items = tuple(self.condition(item, f"{key_where}[{i}]") for i, item in enumerate(value))
                parts.append(AllOf(items) if key == "all" else AnyOf(items))
            elif key == "not":
                parts.append(Not(self.condition(value, key_where)))
            else:
                parts.extend(self.field(str(key), value, key_where))
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def field(self, path: str, raw: Any, where: str) -> list[Condition]:
        if path.split(".")[0] not in VIEW_ROOTS or any(not part for part in path.split(".")):
            self.error(where, f"unknown field {path!r} (paths start with {', '.join(VIEW_ROOTS)})")
            return []
        if not isinstance(raw, Mapping):
            operator = "one_of" if isinstance(raw, Sequence) and not isinstance(raw, str) else "equals"
            raw = {operator: raw}
        tests: list[Condition] = []
        if not raw:
            self.error(where, "expected at least one operator")
        for operator, argument in raw.items():
            op_where = f"{where}.{operator}"
            if operator not in OPERATORS:
                self.error(where, f"unknown operator {operator!r} (expected one of {', '.join(OPERATORS)})")
                continue
            compiled = self.argument(path, str(operator), argument, op_where)
            if compiled is not _MISSING:
                tests.append(FieldTest(path, str(operator), compiled))
        return tests

    def argument(self, path: str, operator: str, argument: Any, where: str) -> Any:
        scalar = (str, int, float, bool)
        if operator == "equals":
            if argument is not None and not isinstance(argument, scalar):
                self.error(where, f"expected a single value, got {argument!r}")
                return _MISSING
            return argument
        if operator == "one_of":
            if (
                not isinstance(argument, Sequence)
                or isinstance(argument, str)
                or not argument
                or not all(isinstance(item, scalar) for item in argument)
            ):
                self.error(where, f"expected a non-empty list of values, got {argument!r}")
                return _MISSING
            return tuple(argument)
        if operator == "contains":
            if not isinstance(argument, scalar):
                self.error(where, f"expected a single value, got {argument!r}")
                return _MISSING
            return argument
        if operator == "regex":
            if not isinstance(argument, str) or len(argument) > _MAX_REGEX:
                self.error(where, f"expected a pattern string of at most {_MAX_REGEX} characters")
                return _MISSING
            try:
                return re.compile(argument, re.IGNORECASE)
            except re.error as exc:
                self.error(where, f"invalid regex: {exc}")
                return _MISSING
        if operator == "range":
            return self.range(argument, where)
        if operator == "exists":
            if not isinstance(argument, bool):
                self.error(where, f"expected true or false, got {argument!r}")
                return _MISSING
            return argument
        # "not": a field-level negation of its own operator mapping (or shorthand).
        inner = self.field(path, argument, where)
        return AllOf(tuple(inner)) if inner else _MISSING

    def range(self, argument: Any, where: str) -> Any:
        def number(value: Any, at: str) -> float | int | None:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.error(at, f"expected a number, got {value!r}")
                return None
            return value

        if isinstance(argument, Sequence) and not isinstance(argument, str):
            if len(argument) != 2:
                self.error(where, "expected [min, max]")
                return _MISSING
            low, high = number(argument[0], where), number(argument[1], where)
            bounds = (low, True, high, True)
        elif isinstance(argument, Mapping):
            unknown = set(argument) - {"gte", "gt", "lte", "lt", "min", "max"}
            if unknown or not argument:
                self.error(where, f"expected keys gte/gt/lte/lt, got {sorted(map(str, argument))}")
                return _MISSING
            if ("gt" in argument and ("gte" in argument or "min" in argument)) or (
                "lt" in argument and ("lte" in argument or "max" in argument)
            ):
                self.error(where, "give at most one lower and one upper bound")
                return _MISSING
            low_key = "gt" if "gt" in argument else ("gte" if "gte" in argument else "min")
            high_key = "lt" if "lt" in argument else ("lte" if "lte" in argument else "max")
            low = number(argument.get(low_key), f"{where}.{low_key}")
            high = number(argument.get(high_key), f"{where}.{high_key}")
            bounds = (low, low_key != "gt", high, high_key != "lt")
        else:
            self.error(where, f"expected [min, max] or a mapping of bounds, got {argument!r}")
            return _MISSING
        if bounds[0] is not None and bounds[2] is not None and bounds[0] > bounds[2]:
            self.error(where, "lower bound is above upper bound")
            return _MISSING
        return bounds

    # actions and options ----------------------------------------------------

    def action(self, raw: Any, where: str) -> Action | None:
        if not isinstance(raw, Mapping):
            self.error(where, "expected a mapping like {team: sales, method: weighted}")
            return None
        kinds = [kind for kind in ("team", "rep", "nurture", "account_owner") if kind in raw]
        if len(kinds) != 1:
            self.error(where, "needs exactly one of team, rep, nurture, account_owner")
            return None
        kind = kinds[0]
        allowed = {kind, "fallback"} | ({"method"} if kind == "team" else set())
        for key in raw:
            if key not in allowed:
                self.error(f"{where}.{key}", f"not allowed in a {kind} action")
        if kind in ("nurture", "account_owner") and raw[kind] is not True:
            self.error(f"{where}.{kind}", "must be true")
        if kind in ("team", "rep") and (not isinstance(raw[kind], str) or not raw[kind]):
            self.error(f"{where}.{kind}", "expected an id")
        method = raw.get("method")
        if method is not None and method not in METHODS:
            self.error(f"{where}.method", f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
        fallback = None
        if raw.get("fallback") is not None:
            if kind == "nurture":
                self.error(f"{where}.fallback", "a nurture action cannot fall back")
            fallback = self.action(raw["fallback"], f"{where}.fallback")
        return Action(
            kind=kind,
            team=raw.get("team") if kind == "team" else None,
            method=method,
            rep=raw.get("rep") if kind == "rep" else None,
            fallback=fallback,
        )

    def options(self, raw: Any, where: str, base: RuleOptions | None = None) -> RuleOptions:
        merged: dict[str, Any] = dict(base.__dict__) if base else {}
        if raw is None:
            return RuleOptions(**merged)
        if not isinstance(raw, Mapping):
            self.error(where, "expected a mapping")
            return RuleOptions(**merged)
        for key, value in raw.items():
            at = f"{where}.{key}"
            if key in ("require_language", "prefer_language", "require_territory"):
                if isinstance(value, bool):
                    merged[key] = value
                else:
                    self.error(at, f"expected true or false, got {value!r}")
            elif key == "hold_outside_hours":
                if isinstance(value, bool):
                    merged["outside_hours"] = "hold" if value else merged.get("outside_hours", "assign")
                else:
                    self.error(at, f"expected true or false, got {value!r}")
            elif key == "outside_hours":
                if value in OUTSIDE_HOURS_MODES:
                    merged[key] = value
                else:
                    self.error(at, f"expected one of {', '.join(OUTSIDE_HOURS_MODES)}, got {value!r}")
            elif key == "segment":
                if value is None or (isinstance(value, str) and value):
                    merged[key] = value.lower() if value else None
                else:
                    self.error(at, f"expected a segment name, got {value!r}")
            else:
                self.error(at, "unknown option")
        return RuleOptions(**merged)


_TOP_KEYS = {
    "name",
    "description",
    "fallback_team",
    "fallback_method",
    "sticky_duplicates",
    "defaults",
    "rules",
}
_RULE_KEYS = {"id", "description", "when", "action", "options"}


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot hash {type(value).__name__}")


def load_rules(text_or_data: str | Mapping[str, Any]) -> RoutingRules:
    """Validate a rules document (YAML/JSON text or a mapping); RulesError lists every problem."""
    if isinstance(text_or_data, str):
        try:
            data = load_yaml(text_or_data)
        except yaml.YAMLError as exc:
            raise RulesError([f"<document>: not valid YAML/JSON: {exc}"]) from exc
    else:
        data = text_or_data
    if not isinstance(data, Mapping):
        raise RulesError(["<document>: expected a mapping with 'rules' and 'fallback_team'"])

    compiler = _Compiler()
    for key in data:
        if key not in _TOP_KEYS:
            compiler.error(str(key), "unknown field")
    fallback_team = data.get("fallback_team")
    if not isinstance(fallback_team, str) or not fallback_team:
        compiler.error("fallback_team", "is required (the team that takes leads no rule matches)")
        fallback_team = ""
    fallback_method = data.get("fallback_method")
    if fallback_method is not None and fallback_method not in METHODS:
        compiler.error("fallback_method", f"unknown method {fallback_method!r}")
    sticky = data.get("sticky_duplicates", True)
    if not isinstance(sticky, bool):
        compiler.error("sticky_duplicates", f"expected true or false, got {sticky!r}")
        sticky = True
    defaults = compiler.options(data.get("defaults"), "defaults")

    raw_rules = data.get("rules")
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, str):
        compiler.error("rules", "expected a list")
        raw_rules = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        where = f"rules[{index}]"
        if not isinstance(raw, Mapping):
            compiler.error(where, "expected a mapping with when/action")
            continue
        for key in raw:
            if key not in _RULE_KEYS:
                compiler.error(f"{where}.{key}", "unknown field")
        rule_id = raw.get("id", f"rule-{index + 1}")
        if not isinstance(rule_id, str) or not rule_id:
            compiler.error(f"{where}.id", "expected a non-empty string")
            rule_id = f"rule-{index + 1}"
        if rule_id in seen:
            compiler.error(f"{where}.id", f"duplicate rule id {rule_id!r}")
        seen.add(rule_id)
        when = compiler.condition(raw.get("when"), f"{where}.when")
        if "action" not in raw:
            compiler.error(f"{where}.action", "is required")
        action = compiler.action(raw.get("action"), f"{where}.action") if "action" in raw else None
        options = compiler.options(raw.get("options"), f"{where}.options", defaults)
        description = raw.get("description") or ""
        if action is not None:
            rules.append(
                Rule(id=rule_id, when=when, action=action, options=options, description=str(description))
            )
    if compiler.errors:
        raise RulesError(compiler.errors)

    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=_canonical)
    version = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return RoutingRules(
        version=version,
        rules=rules,
        fallback_team=fallback_team,
        fallback_method=fallback_method,
        sticky_duplicates=sticky,
        default_options=defaults,
        source=data,
    )
