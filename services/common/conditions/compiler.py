"""Compiling conditions from YAML nodes, so every problem keeps its line and its path."""

from __future__ import annotations

import math
import re
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from common.conditions.documents import NULL_TAG, Problem, is_null, node_kind, node_line
from common.conditions.operators import (
    COMBINATORS,
    OPERATORS,
    RANGE_KEYS,
    AllOf,
    AnyOf,
    Bounds,
    Condition,
    FieldTest,
    Not,
    Scalar,
)
from common.conditions.paths import Catalog, canonical_path, suggest
from common.conditions.regex import RegexError, compile_regex

_STR_TAG = "tag:yaml.org,2002:str"


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
            if node.tag == NULL_TAG:
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
        if not isinstance(node, ScalarNode) or node.tag == NULL_TAG or not str(node.value).strip():
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
            if not isinstance(node, ScalarNode) or node.tag == NULL_TAG:
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
