"""One condition language for scoring rulesets and routing rules: field paths, operators, comparisons, errors.

Both services write `when:` conditions the same way, in YAML (or JSON)::

    when:
      source.kind: {one_of: [web, api]}      # a field path, then one or more operators (all must hold)
      score.grade: A                          # a bare value means equals, a bare list means one_of
      any: [{lead.country: DE}, {quality.flags: {contains: phone_unparsed}}]
      not: {is_test: true}                    # combinators: all / any (lists), not (one condition)

Field paths (one fact, one path, in both services):
  lead.<field>, lead.utm.<key>, lead.click_ids|consent|custom.<key>    the lead as submitted
  enrichment.<field>, enrichment.company.<field>, enrichment.provider.<key>   what scoring derived
  source, source.id|kind|name, is_test, duplicate_of                   where the lead came from
  quality.flags                                                        what could not be read as typed
  repeat_count                                                         (scoring) earlier submissions
  score.fit|intent|grade|qualified, score.conversion.probability|status|outcomes_seen   (routing)
  The scoring ruleset's old `context.<path>` spellings still work as aliases of `<path>`.

Operators: equals, one_of, contains (substring of text; member of a list), regex (search, case-insensitive,
RE2 syntax), range ({min|gte, max|lte, gt, lt} or [min, max], inclusive unless gt/lt), exists (true/false),
not (negates the operators under it).

Comparisons, the same everywhere: text ignores case and surrounding blanks; numbers compare by value, so "50"
equals 50 (forms submit every number as text); true/false match only booleans (a count of 1 is not true);
a list value matches when any item does (contains asks for an equal item). A missing value (absent, null,
blank, an empty list or map) matches nothing except `exists: false`, so `not` of a test on it holds.

Regexes run on RE2, which matches in linear time: lead text is attacker-controlled and the match runs inside
the consumer's transaction. RE2 refuses backreferences and lookaround, and its \\w, \\d, \\b are ASCII: for
other scripts spell the class out (\\pL letters, \\pN digits).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.representer import SafeRepresenter

# Text operators look only at the start of huge values; with RE2 the cost is linear in this bound.
MAX_MATCH_LENGTH = 10_000
MAX_REGEX_LENGTH = 2_000
# Aliases let YAML reuse a node many times; this caps the expanded size (a "billion laughs" document).
MAX_EXPANDED_NODES = 50_000
MAX_DEPTH = 64  # rules are a few levels deep; PyYAML composes and constructs recursively, so depth must be bounded

OPERATORS: tuple[str, ...] = ("equals", "one_of", "contains", "regex", "range", "exists", "not")
COMBINATORS: tuple[str, ...] = ("all", "any", "not")
RANGE_KEYS: tuple[str, ...] = ("min", "max", "gte", "gt", "lte", "lt")

LEAD_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "full_name",
    "email",
    "phone",
    "company",
    "job_title",
    "website",
    "country",
    "region",
    "city",
    "postal_code",
    "language",
    "message",
    "page_url",
    "referrer",
    "form_id",
    "submitted_at",
)
# Maps whose sub-keys are addressable; None means any sub-key (they vary per form or per ad network).
LEAD_MAPS: dict[str, tuple[str, ...] | None] = {
    "utm": ("source", "medium", "campaign", "term", "content"),
    "click_ids": None,
    "consent": None,
    "custom": None,
}
ENRICHMENT_FIELDS: tuple[str, ...] = (
    "email_type",
    "domain",
    "phone_country",
    "phone_line_type",
    "seniority",
    "function",
    "partial",
    "company",
    "company.domain",
    "company.name",
    "company.employee_band",
    "company.industry",
    "company.country",
    "company.revenue_band",
    "provider",
)
OTHER_FIELDS: tuple[str, ...] = (
    "source",
    "source.id",
    "source.kind",
    "source.name",
    "is_test",
    "duplicate_of",
    "repeat_count",
    "quality",
    "quality.flags",
    "score.fit",
    "score.intent",
    "score.grade",
    "score.qualified",
    "score.ruleset_version",
    "score.conversion",
    "score.conversion.probability",
    "score.conversion.status",
    "score.conversion.outcomes_seen",
)
COUNTRY_FIELDS: frozenset[str] = frozenset({"lead.country", "enrichment.company.country", "enrichment.phone_country"})
ROOTS: tuple[str, ...] = (
    "lead",
    "enrichment",
    "source",
    "is_test",
    "duplicate_of",
    "repeat_count",
    "quality",
    "score",
)
# The scoring ruleset's first dialect put the submission's circumstances under `context.`.
ALIAS_PREFIX = "context."

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)


def canonical_path(path: str) -> str:
    """The path a condition's field resolves to: `context.source.kind` is `source.kind`."""
    return path[len(ALIAS_PREFIX) :] if path.startswith(ALIAS_PREFIX) else path


def known_field_paths(roots: tuple[str, ...] = ROOTS) -> list[str]:
    """Every fixed field path under `roots` (open maps accept any sub-key too)."""
    paths = [f"lead.{name}" for name in LEAD_FIELDS]
    for name, keys in LEAD_MAPS.items():
        paths.append(f"lead.{name}")
        paths.extend(f"lead.{name}.{key}" for key in keys or ())
    paths.extend(f"enrichment.{name}" for name in ENRICHMENT_FIELDS)
    paths.extend(OTHER_FIELDS)
    return [path for path in paths if path.split(".", 1)[0] in roots]


def _catalogued(path: str) -> bool:
    parts = path.split(".")
    if path in OTHER_FIELDS:
        return True
    if parts[0] == "lead" and len(parts) >= 2:
        if len(parts) == 2:
            return parts[1] in LEAD_FIELDS or parts[1] in LEAD_MAPS
        if parts[1] not in LEAD_MAPS:
            return False
        allowed = LEAD_MAPS[parts[1]]
        return allowed is None or (len(parts) == 3 and parts[2] in allowed)
    if parts[0] == "enrichment" and len(parts) >= 2:
        return ".".join(parts[1:]) in ENRICHMENT_FIELDS or (parts[1] == "provider" and len(parts) >= 3)
    return False


@dataclass(frozen=True)
class Catalog:
    """What one service can resolve: its roots, whether paths must be catalogued, and known value sets.

    Scoring is strict (it builds every value itself, so an unknown path is a typo). Routing reads whatever
    lead.scored carried, including provider data, so it only checks the root.
    """

    roots: tuple[str, ...] = ROOTS
    strict: bool = True
    vocabularies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    country_fields: frozenset[str] = COUNTRY_FIELDS
    service: str = "this service"

    def problem(self, written: str) -> str | None:
        """Why `written` is not a field path here, or None when it is."""
        path = canonical_path(written)
        parts = path.split(".")
        if any(not part for part in parts):
            return f"unknown field {written!r} (a path is words joined by dots)"
        if parts[0] not in self.roots:
            if parts[0] in ROOTS:
                return f"{written!r} is not known to {self.service} (its paths start with {', '.join(self.roots)})"
            return f"unknown field {written!r}{self._hint(path)} (paths start with {', '.join(self.roots)})"
        if self.strict and not _catalogued(path):
            return f"unknown field {written!r}{self._hint(path)}"
        return None

    def _hint(self, path: str) -> str:
        return suggest(path, known_field_paths(self.roots))


def suggest(word: str, options: tuple[str, ...] | list[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------- compiled conditions


@dataclass(frozen=True)
class Scalar:
    """A rule argument: the source text and the value YAML typed it as.

    Comparisons use the text, so `country: NO` means Norway, not False, and `postal_code: 01234` keeps
    its leading zero; only true/false use the typed value.
    """

    text: str
    typed: Any

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Regex:
    """A pattern compiled once with RE2, with the text it was written as."""

    text: str
    compiled: Any  # re2._Regexp: the package ships no type information

    def search(self, value: str) -> bool:
        """True when the pattern matches anywhere in `value`."""
        return self.compiled.search(value) is not None


@dataclass(frozen=True)
class Bounds:
    """A range: either end may be open; each end inclusive unless written gt/lt."""

    low: float | None
    high: float | None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def holds(self, number: float) -> bool:
        """Whether `number` lies within the bounds."""
        if self.low is not None and (number < self.low or (number == self.low and not self.low_inclusive)):
            return False
        return not (self.high is not None and (number > self.high or (number == self.high and not self.high_inclusive)))


@dataclass(frozen=True)
class FieldTest:
    """One operator applied to one field: `path` as written, `field` the path it resolves to."""

    path: str
    operator: str
    argument: Any  # Scalar | tuple[Scalar, ...] | Regex | Bounds | bool | Condition (for not)
    line: int | None = None
    field: str = ""

    def __post_init__(self) -> None:
        if not self.field:
            object.__setattr__(self, "field", canonical_path(self.path))


@dataclass(frozen=True)
class AllOf:
    """True when every part is true (and for no parts)."""

    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    """True when at least one part is true."""

    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """True when the part is false."""

    part: Condition


Condition = FieldTest | AllOf | AnyOf | Not
Resolver = Callable[[str], Any]
ALWAYS: Condition = AllOf(())


def evaluate(condition: Condition, resolve: Resolver) -> bool:
    """Evaluate `condition`, looking canonical field paths up with `resolve(path)` (None when absent)."""
    if isinstance(condition, AllOf):
        return all(evaluate(part, resolve) for part in condition.parts)
    if isinstance(condition, AnyOf):
        return any(evaluate(part, resolve) for part in condition.parts)
    if isinstance(condition, Not):
        return not evaluate(condition.part, resolve)
    if condition.operator == "not":
        return not evaluate(condition.argument, resolve)
    return apply_test(condition, resolve(condition.field))


def walk(root: Any, path: str) -> Any:
    """The value at a dotted path inside nested mappings, or None."""
    value = root
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def is_present(value: Any) -> bool:
    """A field exists when it holds something: not None, not blank, not an empty (or all-empty) container."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping):
        return any(is_present(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(is_present(item) for item in value)
    return True


def apply_test(test: FieldTest, value: Any) -> bool:
    """Apply one operator to a resolved value."""
    if test.operator == "exists":
        return is_present(value) is test.argument
    if not is_present(value) or isinstance(value, Mapping):
        return False
    if isinstance(value, list | tuple | set | frozenset):
        if test.operator == "contains":
            return any(_equals(item, test.argument) for item in value if item is not None)
        return any(apply_test(test, item) for item in value if item is not None)
    if test.operator == "equals":
        return _equals(value, test.argument)
    if test.operator == "one_of":
        return any(_equals(value, option) for option in test.argument)
    if test.operator == "contains":
        return test.argument.text.strip().casefold() in _as_text(value)[:MAX_MATCH_LENGTH].casefold()
    if test.operator == "regex":
        return bool(test.argument.search(_as_text(value)[:MAX_MATCH_LENGTH]))
    if test.operator == "range":
        number = _as_number(value)
        return number is not None and test.argument.holds(number)
    raise ValueError(f"unknown operator {test.operator!r}")


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _equals(value: Any, argument: Scalar) -> bool:
    if isinstance(value, bool):
        # True == 1 in Python; a rule saying `qualified: true` must not match a count of 1.
        if isinstance(argument.typed, bool):
            return value is argument.typed
        return _as_text(value) == argument.text.strip().casefold()
    number = _as_number(value)
    wanted = _as_number(argument.text)
    if number is not None and wanted is not None:
        return number == wanted
    return _as_text(value).strip().casefold() == argument.text.strip().casefold()


def describe(condition: Condition) -> str:
    """Human-readable rendering, used as the reason of a rule that has no description."""
    if isinstance(condition, AllOf):
        return " and ".join(_wrap(part) for part in condition.parts) or "always"
    if isinstance(condition, AnyOf):
        return " or ".join(_wrap(part) for part in condition.parts)
    if isinstance(condition, Not):
        return f"not {_wrap(condition.part)}"
    argument = condition.argument
    if condition.operator == "not":
        return f"not {_wrap(argument)}"
    if condition.operator == "one_of":
        rendered = "[" + ", ".join(str(option) for option in argument) + "]"
    elif condition.operator == "regex":
        rendered = f"/{argument.text}/"
    elif condition.operator == "range":
        low = ("" if argument.low_inclusive else ">") + (_num(argument.low) if argument.low is not None else "-inf")
        high = ("" if argument.high_inclusive else "<") + (_num(argument.high) if argument.high is not None else "inf")
        rendered = f"{low}..{high}"
    elif condition.operator == "exists":
        return f"{condition.path} {'exists' if argument else 'is missing'}"
    else:
        rendered = str(argument)
    return f"{condition.path} {condition.operator.replace('_', ' ')} {rendered}"


def _wrap(condition: Condition) -> str:
    text = describe(condition)
    return f"({text})" if isinstance(condition, AllOf | AnyOf) and len(condition.parts) > 1 else text


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


# ---------------------------------------------------------------- regexes


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message says why and what to write instead."""


def _re2_options() -> Any:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # the error is returned to the caller; RE2's own log would go to stderr
    return options


_OPTIONS = _re2_options()


def compile_regex(text: str) -> Regex:
    """Compile a rule's regex with RE2: case-insensitive, matched anywhere in the value (^...$ anchors)."""
    if len(text) > MAX_REGEX_LENGTH:
        raise RegexError(f"the pattern is longer than {MAX_REGEX_LENGTH} characters")
    try:
        return Regex(text, re2.compile(text, _OPTIONS))
    except re2.error as exc:
        raise RegexError(_regex_reason(exc)) from None


def _regex_reason(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else exc
    reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if re.search(r"\(\?<?[=!]", reason):
        return f"{reason}: lookahead and lookbehind are not supported (RE2 matches in linear time)"
    if re.search(r"escape sequence: \\[1-9]", reason) or "\\k<" in reason:
        return f"{reason}: backreferences are not supported (RE2 matches in linear time)"
    return reason


# ---------------------------------------------------------------- compiling from YAML nodes


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a condition: its line (None for JSON given as an object), path and message."""

    line: int | None
    where: str
    message: str


def node_line(node: Node | None) -> int | None:
    """1-based line of a node, None when it was not parsed from text."""
    mark = getattr(node, "start_mark", None)
    return mark.line + 1 if mark is not None else None


def node_kind(node: Node) -> str:
    """How a node reads in an error message."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "empty"
    return f"{node.value!r}"


def is_null(node: Node | None) -> bool:
    """True for an absent or explicitly empty YAML value."""
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG)


def expanded_size(root: Node) -> int:
    """Number of nodes once aliases are expanded, computed without expanding them."""
    memo: dict[int, int] = {}

    def size(node: Node) -> int:
        known = memo.get(id(node))
        if known is not None:
            return known
        memo[id(node)] = 1  # a recursive alias counts once instead of looping
        if isinstance(node, MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        memo[id(node)] = total
        return total

    return size(root)


def document_problems(root: Node, what: str) -> list[Problem]:
    """Refuse what a rules document has no use for before anything is built from it.

    Alias expansion beyond MAX_EXPANDED_NODES (a "billion laughs" file is a few hundred bytes that expand
    to billions of values once constructed, hashed or walked), and explicit tags (!!python/..., !custom).
    """
    if expanded_size(root) > MAX_EXPANDED_NODES:
        return [
            Problem(None, "<document>", f"{what} is too large (over {MAX_EXPANDED_NODES} values once aliases expand)")
        ]
    problems: list[Problem] = []
    seen: set[int] = set()
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth > MAX_DEPTH:
            return [Problem(node_line(node), "<document>", f"{what} is nested deeper than {MAX_DEPTH} levels")]
        if node.tag == "tag:yaml.org,2002:merge":
            problems.append(
                Problem(node_line(node), "<document>", "YAML merge keys (<<) are not supported; repeat the keys")
            )
        elif node.tag not in _PLAIN_TAGS:
            problems.append(Problem(node_line(node), "<document>", f"unsupported YAML tag {node.tag!r}"))
        if isinstance(node, MappingNode):
            stack.extend((item, depth + 1) for pair in node.value for item in pair)
        elif isinstance(node, SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)
    return problems


def compose(text: str, loader: type[yaml.SafeLoader], what: str) -> Node | None:
    """The root node of YAML text; a document nested so deep that PyYAML's recursive composer gives up is refused
    like any other unusable document, not left to surface as a RecursionError (a 500)."""
    parser = loader(text)
    try:
        return parser.get_single_node()
    except RecursionError:
        too_deep = Problem(None, "<document>", f"{what} is nested deeper than {MAX_DEPTH} levels")
        raise DocumentRefused([too_deep]) from None
    finally:
        parser.dispose()


class ConditionCompiler:
    """Builds conditions from YAML nodes, so every problem keeps its line and its path."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.problems: list[Problem] = []
        self._constructor = SafeConstructor()

    def error(self, node: Node | None, where: str, message: str) -> None:
        """Record a problem at `node`."""
        self.problems.append(Problem(node_line(node), where, message))

    def typed(self, node: ScalarNode) -> Any:
        """The value YAML typed a scalar as (by the tag the loader resolved)."""
        return self._constructor.construct_object(node, deep=True)

    def condition(self, node: Node, where: str) -> Condition | None:
        """A condition: a mapping of field paths and/or all/any/not (all must hold), or a list (all of)."""
        if isinstance(node, SequenceNode):
            if not node.value:
                self.error(node, where, "expected a non-empty list of conditions, found []")
                return None
            items = [self.condition(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
            valid = tuple(item for item in items if item is not None)
            return AllOf(valid) if len(valid) == len(items) else None
        if not isinstance(node, MappingNode):
            self.error(node, where, f"a condition must be a mapping of field paths to tests, found {node_kind(node)}")
            return None
        if not node.value:
            self.error(node, where, "a condition is empty (leave it out to match every lead)")
            return None
        parts: list[Condition] = []
        seen: dict[str, int | None] = {}
        ok = True
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
                self.error(key_node, where, f"expected a field path or all/any/not, found {node_kind(key_node)}")
                ok = False
                continue
            key = key_node.value
            if key in seen:
                first = seen[key]
                self.error(
                    key_node,
                    f"{where}.{key}",
                    f"duplicate key {key!r}" + (f" (first on line {first})" if first else ""),
                )
                ok = False
                continue
            seen[key] = node_line(key_node)
            part = (
                self.combinator(key, value_node, f"{where}.{key}")
                if key in COMBINATORS
                else self.field(key_node, value_node, where)
            )
            if part is None:
                ok = False
            else:
                parts.append(part)
        if not ok:
            return None
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def combinator(self, key: str, node: Node, where: str) -> Condition | None:
        """all / any (non-empty lists of conditions) and not (one condition)."""
        if key == "not":
            inner = self.condition(node, where)
            return Not(inner) if inner is not None else None
        if not isinstance(node, SequenceNode) or not node.value:
            self.error(
                node,
                where,
                f"expected a non-empty list of conditions, found {node_kind(node)} ('{key}' must be a non-empty list)",
            )
            return None
        parts = [self.condition(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        valid = tuple(part for part in parts if part is not None)
        if len(valid) != len(parts):
            return None
        return AllOf(valid) if key == "all" else AnyOf(valid)

    def field(self, key_node: ScalarNode, node: Node, where: str) -> Condition | None:
        """One field path and its operators."""
        path = key_node.value
        at = f"{where}.{path}"
        problem = self.catalog.problem(path)
        if problem is not None:
            self.error(key_node, at, problem)
            return None
        return self.tests(path, node, at, key_node)

    def tests(self, path: str, node: Node, at: str, key_node: Node) -> Condition | None:
        """The operators on one field: a mapping of them, or the equals / one_of shorthands."""
        if isinstance(node, ScalarNode):
            if node.tag == _NULL_TAG:
                self.error(node, at, "missing operator (use exists: false to test for a missing value)")
                return None
            return self.operator(path, "equals", node, at, key_node)  # `lead.country: DE`
        if isinstance(node, SequenceNode):
            return self.operator(path, "one_of", node, at, key_node)  # `score.grade: [A, B]`
        if not node.value:
            self.error(node, at, f"expected at least one operator (operators: {', '.join(OPERATORS)})")
            return None
        tests: list[Condition] = []
        ok = True
        seen: set[str] = set()
        for op_node, arg_node in node.value:
            operator = op_node.value if isinstance(op_node, ScalarNode) else None
            if operator is None or operator not in OPERATORS:
                shown = operator if operator is not None else node_kind(op_node)
                self.error(
                    op_node,
                    at,
                    f"unknown operator {shown!r}{suggest(str(shown), OPERATORS)} (operators: {', '.join(OPERATORS)})",
                )
                ok = False
                continue
            if operator in seen:
                self.error(op_node, f"{at}.{operator}", f"operator {operator!r} given twice")
                ok = False
                continue
            seen.add(operator)
            test = self.operator(path, operator, arg_node, f"{at}.{operator}", op_node)
            if test is None:
                ok = False
            else:
                tests.append(test)
        if not ok:
            return None
        return tests[0] if len(tests) == 1 else AllOf(tuple(tests))

    def scalar(self, path: str, operator: str, node: Node, where: str) -> Scalar | None:
        """A single comparison value, checked against the field's known values."""
        if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG or not str(node.value).strip():
            self.error(node, where, f"expected a single value, found {node_kind(node)}")
            return None
        scalar = Scalar(text=str(node.value), typed=self.typed(node))
        if operator in ("equals", "one_of"):
            field_path = canonical_path(path)
            vocabulary = self.catalog.vocabularies.get(field_path)
            if vocabulary is not None and scalar.text.strip().casefold() not in (v.casefold() for v in vocabulary):
                self.error(
                    node,
                    where,
                    f"{path} is never {scalar.text!r}{suggest(scalar.text, vocabulary)}"
                    f" (values: {', '.join(vocabulary)})",
                )
                return None
            if field_path in self.catalog.country_fields and not re.fullmatch(r"[A-Za-z]{2}", scalar.text.strip()):
                self.error(node, where, f"{path}: {scalar.text!r} is not an ISO 3166 alpha-2 country code")
                return None
        return scalar

    def operator(self, path: str, operator: str, node: Node, where: str, at: Node) -> FieldTest | None:
        """One operator's argument, compiled (regexes with RE2, once)."""
        line = node_line(at)
        if operator in ("equals", "contains"):
            scalar = self.scalar(path, operator, node, where)
            return FieldTest(path, operator, scalar, line) if scalar is not None else None
        if operator == "one_of":
            if not isinstance(node, SequenceNode) or not node.value:
                self.error(node, where, f"expected a non-empty list of values, found {node_kind(node)}")
                return None
            options = [self.scalar(path, operator, item, where) for item in node.value]
            valid = tuple(option for option in options if option is not None)
            return FieldTest(path, operator, valid, line) if len(valid) == len(options) else None
        if operator == "regex":
            if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG:
                self.error(node, where, f"expected a pattern, found {node_kind(node)}")
                return None
            try:
                pattern = compile_regex(str(node.value))
            except RegexError as exc:
                self.error(node, where, f"invalid regex {node.value!r}: {exc}")
                return None
            return FieldTest(path, operator, pattern, line)
        if operator == "range":
            bounds = self.range(node, where)
            return FieldTest(path, operator, bounds, line) if bounds is not None else None
        if operator == "exists":
            flag = self.typed(node) if isinstance(node, ScalarNode) else None
            if not isinstance(flag, bool):
                self.error(
                    node, where, f"expected true or false, found {node_kind(node)} (exists must be true or false)"
                )
                return None
            return FieldTest(path, operator, flag, line)
        inner = self.tests(path, node, where, at)  # "not": negates the operators under it
        return FieldTest(path, "not", inner, line) if inner is not None else None

    def number(self, node: Node, where: str) -> float | None:
        """A finite number (null stands for an open end and is handled by the caller)."""
        value = self.typed(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            self.error(node, where, f"expected a number, found {node_kind(node)}")
            return None
        return float(value)

    def range(self, node: Node, where: str) -> Bounds | None:
        """{min|gte, max|lte, gt, lt} or [min, max]."""
        ends: dict[str, Node] = {}
        if isinstance(node, SequenceNode):
            if len(node.value) != 2:
                self.error(node, where, "expected [min, max]")
                return None
            ends = {key: item for key, item in zip(("min", "max"), node.value, strict=True) if not is_null(item)}
        elif isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, ScalarNode) else None
                if key not in RANGE_KEYS:
                    self.error(key_node, where, f"unknown bound {key!r} (bounds: {', '.join(RANGE_KEYS)})")
                    return None
                ends[str(key)] = value_node
            if not ends:
                self.error(node, where, "needs min and/or max")
                return None
        else:
            self.error(node, where, f"expected [min, max] or a mapping of bounds, found {node_kind(node)}")
            return None
        lows, highs = [k for k in ("min", "gte", "gt") if k in ends], [k for k in ("max", "lte", "lt") if k in ends]
        if len(lows) > 1 or len(highs) > 1:
            self.error(node, where, "give at most one lower and one upper bound")
            return None
        low = high = None
        ok = True
        for keys, is_low in ((lows, True), (highs, False)):
            if not keys or is_null(ends[keys[0]]):
                continue
            number = self.number(ends[keys[0]], f"{where}.{keys[0]}" if isinstance(node, MappingNode) else where)
            if number is None:
                ok = False
            elif is_low:
                low = number
            else:
                high = number
        if not ok:
            return None
        if low is not None and high is not None and low > high:
            self.error(node, where, f"lower bound is above upper bound (min {low:g} is greater than max {high:g})")
            return None
        return Bounds(low, high, "gt" not in ends, "lt" not in ends)


class DocumentRefused(ValueError):
    """A rules document refused before construction (alias bomb, explicit tags); `problems` say why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = problems


def load_document(text: str, loader: type[yaml.SafeLoader], what: str) -> tuple[Node | None, Any]:
    """Parse YAML (or JSON) text into its root node and its data, refusing alias bombs and tags first.

    Raises DocumentRefused, or yaml.YAMLError for text that is not YAML at all.
    """
    root = compose(text, loader, what)
    if root is None:
        return None, None
    refused = document_problems(root, what)
    if refused:
        raise DocumentRefused(refused)
    return root, loader("").construct_document(root)


def represent(data: Any) -> Node:
    """The node tree of already-parsed data (a JSON object), so it compiles like text (without lines)."""
    return SafeRepresenter(sort_keys=False).represent_data(data)


def child(node: Node | None, key: str) -> Node | None:
    """The value node under `key` in a mapping node (the last one, as construction keeps), or None."""
    found = None
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                found = value_node
    return found
