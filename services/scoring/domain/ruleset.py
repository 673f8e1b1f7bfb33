"""Loading and validating a scoring ruleset from YAML; every problem is reported with its line number.

The YAML format is documented in the header of services/scoring/default_ruleset.yaml.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from scoring.domain.conditions import (
    COMBINATORS,
    COUNTRY_FIELDS,
    FIELD_VOCABULARIES,
    OPERATORS,
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    Not,
    Scalar,
    check_field_path,
    compile_regex,
    known_field_paths,
)

GRADES: tuple[str, ...] = ("A", "B", "C", "D")
SCORE_KINDS: tuple[str, ...] = ("fit", "intent")
TOP_LEVEL_KEYS: tuple[str, ...] = ("name", "version", "description", "fit", "intent", "grades", "qualified")
RULE_KEYS: tuple[str, ...] = ("id", "description", "when", "points", "enabled")
GRADE_KEYS: tuple[str, ...] = ("weights", "thresholds")
QUALIFIED_KEYS: tuple[str, ...] = ("min_fit", "min_intent", "min_grade", "unless")
MAX_POINTS = 100
# Aliases let YAML reuse a node many times; this caps the expanded size (a "billion laughs" file).
MAX_EXPANDED_NODES = 50_000
_RULE_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"


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

    def combined(self, fit: int, intent: int) -> float:
        """The weighted mean of fit and intent that grades are cut from."""
        return (self.fit_weight * fit + self.intent_weight * intent) / (self.fit_weight + self.intent_weight)

    def grade(self, fit: int, intent: int) -> str:
        """Best grade whose threshold the combined score reaches; "D" below all thresholds."""
        combined = self.combined(fit, intent)
        return next((grade for grade, minimum in self.thresholds if combined >= minimum), "D")


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _suggest(word: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "empty"
    return f"{node.value!r}"


class _Parser:
    """Walks the composed YAML node tree, so every value still knows its line."""

    def __init__(self) -> None:
        self.errors: list[tuple[int | None, str]] = []
        self._constructor = SafeConstructor()

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
                self.error(
                    key_node, f"duplicate key {key!r} in {what} (first on line {_line(entries[key][0])})"
                )
                continue
            if key not in allowed:
                self.error(key_node, f"unknown key {key!r} in {what}{_suggest(key, allowed)}")
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
        """A condition mapping: field paths and/or all/any/not; several entries must all hold."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{where} must be a mapping of field paths or all/any/not, found {_kind(node)}")
            return None
        if not node.value:
            self.error(node, f"{where} is empty")
            return None
        parts: list[Condition] = []
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
                self.error(
                    key_node, f"{where}: expected a field path or all/any/not, found {_kind(key_node)}"
                )
                continue
            key = key_node.value
            if key in seen:
                self.error(key_node, f"duplicate key {key!r} in {where} (first on line {seen[key]})")
                continue
            seen[key] = _line(key_node)
            part = (
                self.combinator(key, value_node) if key in COMBINATORS else self.field(key_node, value_node)
            )
            if part is not None:
                parts.append(part)
        if len(parts) != len(node.value):
            return None
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def combinator(self, key: str, node: Node) -> Condition | None:
        if key == "not":
            inner = self.condition(node, "'not'")
            return Not(inner) if inner is not None else None
        if not isinstance(node, SequenceNode) or not node.value:
            self.error(node, f"'{key}' must be a non-empty list of conditions, found {_kind(node)}")
            return None
        parts = [self.condition(item, f"an item of '{key}'") for item in node.value]
        if any(part is None for part in parts):
            return None
        valid = tuple(part for part in parts if part is not None)
        return AllOf(valid) if key == "all" else AnyOf(valid)

    def field(self, key_node: ScalarNode, node: Node) -> Condition | None:
        path = key_node.value
        if not check_field_path(path):
            hint = _suggest(path, known_field_paths())
            if not hint and path.split(".", 1)[0] not in ("lead", "enrichment", "context"):
                hint = " (field paths start with lead., enrichment. or context.)"
            self.error(key_node, f"unknown field {path!r}{hint}")
            return None
        if isinstance(node, ScalarNode):
            if node.tag == _NULL_TAG:
                self.error(node, f"{path}: missing operator (use exists: false to test for a missing value)")
                return None
            # `lead.country: DE` is shorthand for `lead.country: {equals: DE}`.
            return self.operator(path, "equals", node, key_node)
        if isinstance(node, SequenceNode):
            self.error(node, f"{path}: a bare list is ambiguous, write {{one_of: [...]}}")
            return None
        tests: list[Condition] = []
        ok = True
        seen: set[str] = set()
        for op_node, arg_node in node.value:
            operator = op_node.value if isinstance(op_node, ScalarNode) else None
            if operator is None or operator not in OPERATORS:
                shown = operator if operator is not None else _kind(op_node)
                self.error(
                    op_node,
                    f"unknown operator {shown!r}{_suggest(str(shown), OPERATORS)}"
                    f" (operators: {', '.join(OPERATORS)})",
                )
                ok = False
                continue
            if operator in seen:
                self.error(op_node, f"{path}: operator {operator!r} given twice")
                ok = False
                continue
            seen.add(operator)
            test = self.operator(path, operator, arg_node, op_node)
            if test is None:
                ok = False
            else:
                tests.append(test)
        if not ok:
            return None
        if not tests:
            self.error(node, f"{path}: no operator given (operators: {', '.join(OPERATORS)})")
            return None
        return tests[0] if len(tests) == 1 else AllOf(tuple(tests))

    def scalar_argument(self, path: str, operator: str, node: Node) -> Scalar | None:
        if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG or not str(node.value).strip():
            self.error(node, f"{path}: {operator} needs a single value, found {_kind(node)}")
            return None
        scalar = Scalar(text=str(node.value), typed=self.typed(node))
        if operator in ("equals", "one_of"):
            vocabulary = FIELD_VOCABULARIES.get(path)
            if vocabulary is not None and scalar.text.strip().casefold() not in (
                v.casefold() for v in vocabulary
            ):
                self.error(
                    node,
                    f"{path} is never {scalar.text!r}{_suggest(scalar.text, vocabulary)}"
                    f" (values: {', '.join(vocabulary)})",
                )
                return None
            if path in COUNTRY_FIELDS and not re.fullmatch(r"[A-Za-z]{2}", scalar.text.strip()):
                self.error(node, f"{path}: {scalar.text!r} is not an ISO 3166 alpha-2 country code")
                return None
        return scalar

    def operator(self, path: str, operator: str, node: Node, at: Node) -> FieldTest | None:
        line = _line(at)
        if operator in ("equals", "contains"):
            scalar = self.scalar_argument(path, operator, node)
            return FieldTest(path, operator, scalar, line) if scalar is not None else None
        if operator == "one_of":
            if not isinstance(node, SequenceNode) or not node.value:
                self.error(node, f"{path}: one_of needs a non-empty list, found {_kind(node)}")
                return None
            options = [self.scalar_argument(path, operator, item) for item in node.value]
            if any(option is None for option in options):
                return None
            return FieldTest(path, operator, tuple(o for o in options if o is not None), line)
        if operator == "regex":
            pattern_text = self.text(node, f"{path}: regex")
            if pattern_text is None:
                return None
            try:
                pattern = compile_regex(pattern_text)
            except re.error as exc:
                self.error(node, f"{path}: invalid regex {pattern_text!r}: {exc}")
                return None
            return FieldTest(path, operator, pattern, line)
        if operator == "range":
            bounds = self.mapping(node, f"{path}: range", ("min", "max"))
            if bounds is None:
                return None
            if not bounds:
                self.error(node, f"{path}: range needs min and/or max")
                return None
            low = self.number(bounds["min"][1], f"{path}: range min") if "min" in bounds else None
            high = self.number(bounds["max"][1], f"{path}: range max") if "max" in bounds else None
            if ("min" in bounds and low is None) or ("max" in bounds and high is None):
                return None
            if low is not None and high is not None and low > high:
                self.error(node, f"{path}: range min {low:g} is greater than max {high:g}")
                return None
            return FieldTest(path, operator, (low, high), line)
        flag = self.boolean(node, f"{path}: exists")
        return FieldTest(path, operator, flag, line) if flag is not None else None

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
            self.text(entries["description"][1], f"{label}: description")
            if "description" in entries
            else None
        )
        when = self.condition(entries["when"][1], f"{label}: when") if "when" in entries else None
        points = (
            self.integer(entries["points"][1], f"{label}: points", -MAX_POINTS, MAX_POINTS)
            if "points" in entries
            else None
        )
        enabled = self.boolean(entries["enabled"][1], f"{label}: enabled") if "enabled" in entries else True
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
                    self.error(
                        thresholds_node, f"grades.thresholds is missing {grade!r} (D is everything below C)"
                    )
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
        min_fit = (
            self.integer(entries["min_fit"][1], "qualified.min_fit", 0, 100) if "min_fit" in entries else None
        )
        min_intent = (
            self.integer(entries["min_intent"][1], "qualified.min_intent", 0, 100)
            if "min_intent" in entries
            else None
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


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Number of nodes once aliases are expanded, computed without expanding them."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)


def _tag_errors(root: Node) -> list[tuple[int | None, str]]:
    """Explicit YAML tags (!!python/..., !custom) have no meaning in a ruleset; name where they are."""
    errors: list[tuple[int | None, str]] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag == "tag:yaml.org,2002:merge":
            errors.append((_line(node), "YAML merge keys (<<) are not supported; repeat the keys"))
        elif node.tag not in _PLAIN_TAGS:
            errors.append((_line(node), f"unsupported YAML tag {node.tag!r}"))
        if isinstance(node, MappingNode):
            stack.extend(item for pair in node.value for item in pair)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return errors


def _content_version(data: Any) -> str:
    """Hash of the parsed content: comments, layout and key order do not change it."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def load_ruleset(yaml_text: str) -> Ruleset:
    """Parse and validate a ruleset; raise RulesetError listing every problem with its line."""
    try:
        root = yaml.compose(yaml_text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RulesetError([(line, f"not valid YAML: {exc.problem or exc.context}")]) from exc
    except yaml.YAMLError as exc:
        raise RulesetError([(None, f"not valid YAML: {exc}")]) from exc
    if root is None:
        raise RulesetError([(None, "the ruleset is empty")])
    if _expanded_size(root, {}) > MAX_EXPANDED_NODES:
        raise RulesetError(
            [(None, f"the ruleset is too large (over {MAX_EXPANDED_NODES} values once aliases expand)")]
        )
    tag_errors = _tag_errors(root)
    if tag_errors:
        raise RulesetError(tag_errors)
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
