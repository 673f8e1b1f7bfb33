"""Conditions of ruleset rules: the field paths they address, the operators, and their evaluation.

Matching is forgiving where marketing ops would expect it: strings compare case-insensitively and
ignore surrounding whitespace, numbers compare by value ("50" equals 50), and a list value matches
when any of its items does. A missing field (None, "", empty list/map) matches nothing except
`exists: false`, so `not` of a condition on a missing field is true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scoring.domain.emails import EMAIL_TYPES
from scoring.domain.firmographics import EMPLOYEE_BANDS
from scoring.domain.phones import LINE_TYPES
from scoring.domain.titles import FUNCTIONS, SENIORITIES

# Lead text is attacker-controlled: text operators only look at the start of huge values, which bounds
# polynomial matching costs. It does not stop a catastrophically backtracking regex; admins own theirs.
MAX_MATCH_LENGTH = 10_000

OPERATORS: tuple[str, ...] = ("equals", "one_of", "contains", "regex", "range", "exists")
COMBINATORS: tuple[str, ...] = ("all", "any", "not")

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
CONTEXT_FIELDS: tuple[str, ...] = (
    "source",
    "source.id",
    "source.kind",
    "source.name",
    "is_test",
    "duplicate_of",
    "repeat_count",
)

# Values the domain itself produces: a rule comparing against anything else can never fire.
FIELD_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "enrichment.email_type": EMAIL_TYPES,
    "enrichment.seniority": SENIORITIES,
    "enrichment.function": FUNCTIONS,
    "enrichment.company.employee_band": EMPLOYEE_BANDS,
    "enrichment.phone_line_type": LINE_TYPES,
}
COUNTRY_FIELDS: frozenset[str] = frozenset(
    {"lead.country", "enrichment.company.country", "enrichment.phone_country"}
)


def known_field_paths() -> list[str]:
    """Every fixed field path a condition may address (open maps accept any sub-key too)."""
    paths = [f"lead.{name}" for name in LEAD_FIELDS]
    for name, keys in LEAD_MAPS.items():
        paths.append(f"lead.{name}")
        paths.extend(f"lead.{name}.{key}" for key in keys or ())
    paths.extend(f"enrichment.{name}" for name in ENRICHMENT_FIELDS)
    paths.extend(f"context.{name}" for name in CONTEXT_FIELDS)
    return paths


def check_field_path(path: str) -> bool:
    """True if `path` names a field the scorer can resolve."""
    parts = path.split(".")
    if len(parts) < 2 or any(not part for part in parts):
        return False
    root, rest = parts[0], parts[1:]
    if root == "lead":
        if len(rest) == 1:
            return rest[0] in LEAD_FIELDS or rest[0] in LEAD_MAPS
        if rest[0] not in LEAD_MAPS:
            return False
        allowed = LEAD_MAPS[rest[0]]
        return allowed is None or (len(rest) == 2 and rest[1] in allowed)
    if root == "enrichment":
        return ".".join(rest) in ENRICHMENT_FIELDS or (rest[0] == "provider" and len(rest) >= 2)
    if root == "context":
        return ".".join(rest) in CONTEXT_FIELDS
    return False


@dataclass(frozen=True)
class Scalar:
    """A rule argument: the YAML source text and the value YAML typed it as.

    Comparisons against string fields use the text, so `country: NO` means Norway, not False,
    and `postal_code: 01234` keeps its leading zero.
    """

    text: str
    typed: Any

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class FieldTest:
    """One operator applied to one field."""

    path: str
    operator: str
    argument: Any  # Scalar | tuple[Scalar, ...] | re.Pattern | tuple[float|None, float|None] | bool
    line: int | None = None


@dataclass(frozen=True)
class AllOf:
    """True when every part is true."""

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


def evaluate(condition: Condition, resolve: Resolver) -> bool:
    """Evaluate `condition`, looking field values up with `resolve(path)`."""
    if isinstance(condition, AllOf):
        return all(evaluate(part, resolve) for part in condition.parts)
    if isinstance(condition, AnyOf):
        return any(evaluate(part, resolve) for part in condition.parts)
    if isinstance(condition, Not):
        return not evaluate(condition.part, resolve)
    return _test(condition, resolve(condition.path))


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


def _test(test: FieldTest, value: Any) -> bool:
    if test.operator == "exists":
        return is_present(value) is test.argument
    if not is_present(value):
        return False
    if isinstance(value, list | tuple | set | frozenset):
        return any(_test(test, item) for item in value if item is not None)
    if test.operator == "equals":
        return _equals(value, test.argument)
    if test.operator == "one_of":
        return any(_equals(value, option) for option in test.argument)
    if test.operator == "contains":
        return test.argument.text.strip().casefold() in _as_text(value)[:MAX_MATCH_LENGTH].casefold()
    if test.operator == "regex":
        return test.argument.search(_as_text(value)[:MAX_MATCH_LENGTH]) is not None
    if test.operator == "range":
        number = _as_number(value)
        low, high = test.argument
        return number is not None and (low is None or number >= low) and (high is None or number <= high)
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
        return " and ".join(_wrap(part) for part in condition.parts)
    if isinstance(condition, AnyOf):
        return " or ".join(_wrap(part) for part in condition.parts)
    if isinstance(condition, Not):
        return f"not {_wrap(condition.part)}"
    argument = condition.argument
    if condition.operator == "one_of":
        rendered = "[" + ", ".join(str(option) for option in argument) + "]"
    elif condition.operator == "regex":
        rendered = f"/{argument.pattern}/"
    elif condition.operator == "range":
        low, high = argument
        rendered = f"{_num(low) if low is not None else '-inf'}..{_num(high) if high is not None else 'inf'}"
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


def compile_regex(text: str) -> re.Pattern[str]:
    """Compile a rule's regex: case-insensitive, matched anywhere in the value (use ^...$ to anchor)."""
    return re.compile(text, re.IGNORECASE)
