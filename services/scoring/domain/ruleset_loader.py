"""Loading and validating a scoring ruleset from YAML; every problem is reported with its line number.

The YAML format is documented in the header of services/scoring/default_ruleset.yaml.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import itertools
import json
import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from common.conditions import (
    ConditionCompiler,
    DocumentRefused,
    compose,
    document_problems,
    node_kind,
    suggest,
)
from scoring.domain.conditions import CATALOG, Condition
from scoring.domain.ruleset import (
    GRADE_KEYS,
    GRADES,
    MAX_POINTS,
    QUALIFIED_KEYS,
    RULE_KEYS,
    SCORE_KINDS,
    TOP_LEVEL_KEYS,
    Qualification,
    Rule,
    Ruleset,
    RulesetError,
)

_RULE_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_NULL_TAG = "tag:yaml.org,2002:null"


def _line(node: Node) -> int:
    return node.start_mark.line + 1


_kind = node_kind


class _Parser:
    """Walks the composed YAML node tree, so every value still knows its line."""

    def __init__(self) -> None:
        self.errors: list[tuple[int | None, str]] = []
        self._constructor = SafeConstructor()
        self._conditions = ConditionCompiler(CATALOG)

    def error(self, node: Node | None, problem: str) -> None:
        self.errors.append((_line(node) if node is not None else None, problem))

    def typed(self, node: ScalarNode) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]] | None:
        """{key: (key node, value node)} of a mapping whose keys must be in `allowed`."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping, found {_kind(node)}")
            return None
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, f"{what}: keys must be plain words")
                continue
            key = key_node.value
            if key in entries:
                self.error(key_node, f"duplicate key {key!r} in {what} (first on line {_line(entries[key][0])})")
                continue
            if key not in allowed:
                self.error(key_node, f"unknown key {key!r} in {what}{suggest(key, allowed)}")
                continue
            entries[key] = (key_node, value_node)
        return entries

    def text(self, node: Node, what: str) -> str | None:
        if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG:
            self.error(node, f"{what} must be text, found {_kind(node)}")
            return None
        return str(node.value)

    def integer(self, node: Node, what: str, low: int, high: int) -> int | None:
        value = self.typed(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(node, f"{what} must be a whole number, found {_kind(node)}")
            return None
        if not low <= value <= high:
            self.error(node, f"{what} must be between {low} and {high}, found {value}")
            return None
        return value

    def number(self, node: Node, what: str) -> float | None:
        value = self.typed(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            self.error(node, f"{what} must be a number, found {_kind(node)}")
            return None
        return float(value)

    def boolean(self, node: Node, what: str) -> bool | None:
        value = self.typed(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, bool):
            self.error(node, f"{what} must be true or false, found {_kind(node)}")
            return None
        return value

    # --- conditions -------------------------------------------------------------------------

    def condition(self, node: Node, where: str) -> Condition | None:
        """A condition in the shared language (common.conditions); its problems join ours, by line."""
        compiler = self._conditions
        compiler.problems.clear()
        condition = compiler.condition(node, where)
        self.errors.extend((problem.line, problem.message) for problem in compiler.problems)
        return condition if not compiler.problems else None

    # --- rules and the rest -----------------------------------------------------------------

    def rules(self, kind: str, node: Node, seen_ids: dict[str, int]) -> list[Rule]:
        if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
            return []
        if not isinstance(node, SequenceNode):
            self.error(node, f"'{kind}' must be a list of rules, found {_kind(node)}")
            return []
        rules: list[Rule] = []
        for item in node.value:
            rule = self.rule(kind, item, seen_ids)
            if rule is not None:
                rules.append(rule)
        return rules

    def rule(self, kind: str, node: Node, seen_ids: dict[str, int]) -> Rule | None:
        entries = self.mapping(node, f"a {kind} rule", RULE_KEYS)
        if entries is None:
            return None
        errors_before = len(self.errors)
        for required in ("id", "when", "points"):
            if required not in entries:
                self.error(node, f"{kind} rule is missing {required!r}")
        rule_id = self.text(entries["id"][1], "rule id") if "id" in entries else None
        if rule_id is not None:
            id_node = entries["id"][1]
            if not _RULE_ID_RE.match(rule_id):
                self.error(id_node, f"rule id {rule_id!r} may only use letters, digits, '_', '-' and '.'")
            elif rule_id in seen_ids:
                self.error(id_node, f"duplicate rule id {rule_id!r} (first on line {seen_ids[rule_id]})")
            else:
                seen_ids[rule_id] = _line(id_node)
        label = f"rule {rule_id!r}" if rule_id else f"{kind} rule"
        description = (
            self.text(entries["description"][1], f"{label}: description") if "description" in entries else None
        )
        when = self.condition(entries["when"][1], f"{label}: when") if "when" in entries else None
        points = (
            self.integer(entries["points"][1], f"{label}: points", -MAX_POINTS, MAX_POINTS)
            if "points" in entries
            else None
        )
        enabled = self.boolean(entries["enabled"][1], f"{label}: enabled") if "enabled" in entries else True
        grade_at_least = None
        if "grade_at_least" in entries:
            grade_node = entries["grade_at_least"][1]
            grade_at_least = self.text(grade_node, f"{label}: grade_at_least")
            if grade_at_least is not None and grade_at_least not in GRADES:
                self.error(grade_node, f"{label}: grade_at_least must be one of {', '.join(GRADES)}")
        qualifies = self.boolean(entries["qualifies"][1], f"{label}: qualifies") if "qualifies" in entries else False
        if len(self.errors) > errors_before or rule_id is None or when is None or points is None:
            return None
        return Rule(
            id=rule_id,
            score=kind,
            when=when,
            points=points,
            description=description.strip() if description else None,
            enabled=bool(enabled),
            line=_line(node),
            grade_at_least=grade_at_least,
            qualifies=bool(qualifies),
        )

    def grades(self, node: Node) -> tuple[float, float, tuple[tuple[str, float], ...]] | None:
        entries = self.mapping(node, "grades", GRADE_KEYS)
        if entries is None:
            return None
        ok = True
        for required in GRADE_KEYS:
            if required not in entries:
                self.error(node, f"grades is missing {required!r}")
                ok = False
        if not ok:
            return None
        weights = self.mapping(entries["weights"][1], "grades.weights", SCORE_KINDS)
        fit_weight = intent_weight = None
        if weights is not None:
            for required in SCORE_KINDS:
                if required not in weights:
                    self.error(entries["weights"][1], f"grades.weights is missing {required!r}")
            if "fit" in weights:
                fit_weight = self.number(weights["fit"][1], "grades.weights.fit")
            if "intent" in weights:
                intent_weight = self.number(weights["intent"][1], "grades.weights.intent")
            if (
                fit_weight is not None
                and intent_weight is not None
                and (fit_weight < 0 or intent_weight < 0 or fit_weight + intent_weight <= 0)
            ):
                self.error(entries["weights"][1], "grades.weights must be >= 0 and not both 0")
                fit_weight = None
        thresholds_node = entries["thresholds"][1]
        graded = GRADES[:-1]
        raw = self.mapping(thresholds_node, "grades.thresholds", graded)
        thresholds: list[tuple[str, float]] = []
        if raw is not None:
            for grade in graded:
                if grade not in raw:
                    self.error(thresholds_node, f"grades.thresholds is missing {grade!r} (D is everything below C)")
                    continue
                minimum = self.number(raw[grade][1], f"grades.thresholds.{grade}")
                if minimum is None:
                    continue
                if not 0 <= minimum <= 100:
                    self.error(raw[grade][1], f"grades.thresholds.{grade} must be between 0 and 100")
                    continue
                thresholds.append((grade, minimum))
            for (better, high), (worse, low) in itertools.pairwise(thresholds):
                if high <= low:
                    self.error(
                        raw[worse][1],
                        f"grades.thresholds: {better} ({high:g}) must be above {worse} ({low:g})",
                    )
        if fit_weight is None or intent_weight is None or len(thresholds) != len(graded):
            return None
        return fit_weight, intent_weight, tuple(thresholds)

    def qualified(self, node: Node) -> Qualification | None:
        entries = self.mapping(node, "qualified", QUALIFIED_KEYS)
        if entries is None:
            return None
        errors_before = len(self.errors)
        for required in ("min_fit", "min_intent"):
            if required not in entries:
                self.error(node, f"qualified is missing {required!r}")
        min_fit = self.integer(entries["min_fit"][1], "qualified.min_fit", 0, 100) if "min_fit" in entries else None
        min_intent = (
            self.integer(entries["min_intent"][1], "qualified.min_intent", 0, 100) if "min_intent" in entries else None
        )
        min_grade = None
        if "min_grade" in entries:
            min_grade = self.text(entries["min_grade"][1], "qualified.min_grade")
            if min_grade is not None and min_grade not in GRADES:
                self.error(entries["min_grade"][1], f"qualified.min_grade must be one of {', '.join(GRADES)}")
        unless = self.condition(entries["unless"][1], "qualified.unless") if "unless" in entries else None
        if len(self.errors) > errors_before or min_fit is None or min_intent is None:
            return None
        return Qualification(min_fit=min_fit, min_intent=min_intent, min_grade=min_grade, unless=unless)


def _content_version(data: Any) -> str:
    """Hash of the parsed content: comments, layout and key order do not change it."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def load_ruleset(yaml_text: str) -> Ruleset:
    """Parse and validate a ruleset; raise RulesetError listing every problem with its line."""
    try:
        root = compose(yaml_text, yaml.SafeLoader, "the ruleset")
    except DocumentRefused as exc:
        raise RulesetError([(problem.line, problem.message) for problem in exc.problems]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RulesetError([(line, f"not valid YAML: {exc.problem or exc.context}")]) from exc
    except yaml.YAMLError as exc:
        raise RulesetError([(None, f"not valid YAML: {exc}")]) from exc
    if root is None:
        raise RulesetError([(None, "the ruleset is empty")])
    refused = document_problems(root, "the ruleset")
    if refused:
        raise RulesetError([(problem.line, problem.message) for problem in refused])
    parser = _Parser()
    entries = parser.mapping(root, "the ruleset", TOP_LEVEL_KEYS)
    if entries is None:
        raise RulesetError(parser.errors)

    for required in ("name", "grades", "qualified"):
        if required not in entries:
            parser.error(root, f"the ruleset is missing {required!r}")
    name = parser.text(entries["name"][1], "name") if "name" in entries else None
    declared = parser.text(entries["version"][1], "version") if "version" in entries else None
    description = parser.text(entries["description"][1], "description") if "description" in entries else None
    seen_ids: dict[str, int] = {}
    fit_rules = parser.rules("fit", entries["fit"][1], seen_ids) if "fit" in entries else []
    intent_rules = parser.rules("intent", entries["intent"][1], seen_ids) if "intent" in entries else []
    if not seen_ids and not parser.errors:
        parser.error(root, "the ruleset has no rules: add a 'fit' and/or 'intent' list")
    grades = parser.grades(entries["grades"][1]) if "grades" in entries else None
    qualification = parser.qualified(entries["qualified"][1]) if "qualified" in entries else None

    if parser.errors or grades is None or qualification is None or name is None:
        raise RulesetError(parser.errors or [(None, "invalid ruleset")])
    fit_weight, intent_weight, thresholds = grades
    return Ruleset(
        version=_content_version(yaml.safe_load(yaml_text)),
        source_text=yaml_text,
        name=name.strip(),
        declared_version=declared.strip() if declared else None,
        fit_rules=tuple(fit_rules),
        intent_rules=tuple(intent_rules),
        fit_weight=fit_weight,
        intent_weight=intent_weight,
        thresholds=thresholds,
        qualification=qualification,
        description=description,
    )


def _read_default() -> str:
    return importlib.resources.files("scoring").joinpath("default_ruleset.yaml").read_text(encoding="utf-8")


DEFAULT_RULESET_YAML: str = _read_default()
