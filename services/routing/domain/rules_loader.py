"""The routing rules document: its grammar and the loader that validates it into RoutingRules (routing.domain.rules).

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
        sla:                      # optional: this rule's SLA policy (grammar in routing.domain.sla_grammar)
          minutes: {A: 5, B: 30}  # a number, or per grade; a grade left out falls through
          business_hours: false   # false: around the clock
          warn_at: [0.5, {minutes_before: 1}]
          escalation: [reassign, {step: notify_manager, minutes: 10}, manager, queue]
          follow_up: {touches: 3, within_hours: 48}

Conditions are the condition language shared with scoring rulesets (common.conditions: field paths,
operators, comparisons and errors are documented there): equals, one_of, contains (substring of text,
member of a list), regex (RE2, case-insensitive search), range ({gte, gt, lte, lt} or [min, max] inclusive),
exists (true/false), not (field-level negation). Text ignores case; numbers compare by value ("50" equals
50). A missing field satisfies nothing except `exists: false` and negations. Besides the lead, enrichment,
source, is_test and duplicate_of, rules read the score with its conversion odds
(`score.conversion.probability`) and the lead's quality flags (`quality.flags: {contains: phone_unparsed}`).
Errors name the path and, for text, the line.

Actions: {team: id, method: round_robin|weighted|least_loaded} | {rep: id} | {nurture: true} |
{account_owner: true}. Any action except nurture may carry `fallback: <action>`, used when it names nobody.
An account_owner action with no owner and no fallback passes the lead on to the next matching rule.

Options: require_language (false: only reps speaking the lead's language), prefer_language (false: speakers
first, anyone if none is free), require_territory (true), segment (null: only reps serving it),
outside_hours: assign (nobody working -> pick among reps who are only outside their hours; default) |
hold (wait for the first of them to start) | queue (to the team queue). `hold_outside_hours: true` is
shorthand for `outside_hours: hold`.

SLA: a rule's `sla:` block sets the first-contact clock of the leads it assigns: `minutes` (or per grade),
`business_hours` (false: around the clock), `warn_at` (fractions of the SLA or `{minutes_before: N}`),
`escalation` (an ordered ladder of reassign | notify_manager | manager | queue steps, each with its own
`minutes` clock; the last step repeats) and `follow_up` ({touches: N, within_hours: H}: after the first touch
a second clock runs until N touches are recorded; missing them is a lead.sla_breached with clock follow_up).
Field by field, the rule's block wins over the team's (`sla:` in the roster), which wins over the environment
defaults (HANDOFF_SLA_*). The block is part of the document, so the rules' version hash covers it; errors name
their path like the rest (`rules[2].sla.minutes: must be > 0`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import yaml
from yaml.nodes import Node

from common.conditions import (
    ROOTS,
    AllOf,
    Catalog,
    Condition,
    ConditionCompiler,
    DocumentRefused,
    Problem,
    child,
    is_null,
    load_document,
    represent,
)
from routing.domain.reps import METHODS
from routing.domain.rules import Action, RoutingRules, Rule, RuleOptions
from routing.domain.sla_grammar import parse_sla_block

# Roots of the lead view; a path starting elsewhere is almost surely a typo that would never match.
VIEW_ROOTS = tuple(root for root in ROOTS if root != "repeat_count")
# Lenient below the root: the view carries whatever lead.scored carried (provider data included).
CATALOG = Catalog(roots=VIEW_ROOTS, strict=False, service="routing")
OUTSIDE_HOURS_MODES = ("assign", "hold", "queue")
ALWAYS: Condition = AllOf(())


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
    """Parse YAML (or JSON) where only true/false are booleans (YAML 1.2 style); refuses alias bombs."""
    try:
        return load_document(text, _YamlLoader, "the document")[1]
    except DocumentRefused as exc:
        raise RulesError([_render(problem) for problem in exc.problems]) from exc


def _render(problem: Problem) -> str:
    return f"{problem.where}: {problem.message}" + (f" (line {problem.line})" if problem.line else "")


class _Compiler:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    # conditions: the shared language, compiled from the YAML nodes so errors keep their lines -------------

    def condition(self, node: Node | None, where: str) -> Condition:
        """A rule's `when`; no `when` (or an empty one) matches every lead."""
        if is_null(node):
            return ALWAYS
        assert node is not None  # is_null covers None
        compiler = ConditionCompiler(CATALOG)
        compiled = compiler.condition(node, where)
        self.errors.extend(_render(problem) for problem in compiler.problems)
        return compiled if compiled is not None else ALWAYS

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
_RULE_KEYS = {"id", "description", "when", "action", "options", "sla"}


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot hash {type(value).__name__}")


def load_rules(text_or_data: str | Mapping[str, Any]) -> RoutingRules:
    """Validate a rules document (YAML/JSON text or a mapping); RulesError lists every problem."""
    root: Node | None
    if isinstance(text_or_data, str):
        try:
            root, data = load_document(text_or_data, _YamlLoader, "the rules document")
        except DocumentRefused as exc:
            raise RulesError([_render(problem) for problem in exc.problems]) from exc
        except yaml.YAMLError as exc:
            raise RulesError([f"<document>: not valid YAML/JSON: {exc}"]) from exc
    else:
        data = text_or_data
        root = represent(dict(text_or_data)) if isinstance(text_or_data, Mapping) else None
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
    rule_nodes = child(root, "rules")
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
        rule_node = rule_nodes.value[index] if rule_nodes is not None and index < len(rule_nodes.value) else None
        when = compiler.condition(child(rule_node, "when"), f"{where}.when")
        if "action" not in raw:
            compiler.error(f"{where}.action", "is required")
        action = compiler.action(raw.get("action"), f"{where}.action") if "action" in raw else None
        options = compiler.options(raw.get("options"), f"{where}.options", defaults)
        description = raw.get("description") or ""
        sla, sla_errors = parse_sla_block(raw.get("sla"), f"{where}.sla")
        compiler.errors.extend(sla_errors)
        if action is not None:
            rules.append(
                Rule(id=rule_id, when=when, action=action, options=options, description=str(description), sla=sla)
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
