"""Compiled conditions and how they are evaluated: operators, combinators, and the comparisons they make."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from common.conditions.paths import canonical_path

# Text operators look only at the start of huge values; with RE2 the cost is linear in this bound.
MAX_MATCH_LENGTH = 10_000

OPERATORS: tuple[str, ...] = ("equals", "one_of", "contains", "regex", "range", "exists", "not")
COMBINATORS: tuple[str, ...] = ("all", "any", "not")
RANGE_KEYS: tuple[str, ...] = ("min", "max", "gte", "gt", "lte", "lt")


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

    # Worked out once per rule, not once per lead and rule (the dataclass compares and hashes only its fields).
    @cached_property
    def folded(self) -> str:
        return self.text.strip().casefold()

    @cached_property
    def number(self) -> float | None:
        return _as_number(self.text)


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
    if type(condition) is FieldTest and condition.operator != "not":  # most tests: one check, not four
        return apply_test(condition, resolve(condition.field))
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
    if type(value) is str:  # the common case, without the Mapping and sequence checks (ABC checks are slow)
        if not value.strip():
            return False
    elif not is_present(value) or isinstance(value, Mapping):
        return False
    elif isinstance(value, list | tuple | set | frozenset):
        if test.operator == "contains":
            return any(_equals(item, test.argument) for item in value if item is not None)
        return any(apply_test(test, item) for item in value if item is not None)
    if test.operator == "equals":
        return _equals(value, test.argument)
    if test.operator == "one_of":
        return any(_equals(value, option) for option in test.argument)
    if test.operator == "contains":
        return test.argument.folded in _as_text(value)[:MAX_MATCH_LENGTH].casefold()
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
        text = value.strip()
        # Only text that starts as a number does can be a finite one (float() also reads inf and nan, which are
        # not): the test skips float()'s exception, most of a rule's cost on a text field.
        if not text or not (text[0] in "+-." or text[0].isdecimal()):
            return None
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _equals(value: Any, argument: Scalar) -> bool:
    if isinstance(value, bool):
        # True == 1 in Python; a rule saying `qualified: true` must not match a count of 1.
        if isinstance(argument.typed, bool):
            return value is argument.typed
        return _as_text(value) == argument.folded
    number = _as_number(value)
    wanted = argument.number
    if number is not None and wanted is not None:
        return number == wanted
    return _as_text(value).strip().casefold() == argument.folded


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
