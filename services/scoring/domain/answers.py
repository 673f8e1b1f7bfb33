"""A lead's score remembered by what its rules can tell apart in it.

A score depends on nothing but the answers of its ruleset's field tests, and each test reads one field. So two leads
score alike when every field reads the same to every test on it. A field whose values come from a small set the
domain makes (the email type, seniority, the source's kind, the repeat count...) enters the key as its value. A field
tested only for equality with some texts (a country, the address's domain) enters it as its folded text when that is
one of those texts, else as "none of them". Any other (an address, a message, a page URL, a click id, a title) enters
it as the answers of the tests on it: each unit of tests compiled as the rules compile it (an `any`'s regexes of one
field stay one RE2 alternation, so a text costs the searches it costs in the rules), remembered by the text when it
is short (titles and forms repeat). A lead whose key was seen before gets the score its first lead got, without its
rules run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from common.conditions.predicates import Predicate, compile_condition
from scoring.domain.conditions import CONTEXT_ROOTS, FIELD_VOCABULARIES, AllOf, AnyOf, Condition, FieldTest, Not
from scoring.domain.memo import MEMO_MAX_TEXT, MEMO_SIZE, Kept

# Operators answered from the value itself: a field of few values tested only by these enters the key as its value.
_KEYED_BY_VALUE = frozenset(("equals", "one_of", "range"))
# Key part of a text equal to none of its field's tested texts.
_OTHER = object()
# Value types a key may hold as they are: equal values of these are the same to every test (1 == True and
# 1 == 1.0 hash alike, so a key holds its values' types too, and floats are left to the rules).
_PLAIN_TYPES = frozenset((str, type(None), int, bool))

Answers = tuple[bool, ...]


class ScoreKeys:
    """For one ruleset: the key of a lead's field values (`key`), equal for leads that every test answers alike."""

    def __init__(self, tested_fields: tuple[str, ...], conditions: list[Condition]) -> None:
        units: dict[str, list[Condition]] = {}
        operators: dict[str, set[str]] = {}
        for condition in conditions:
            _collect(condition, units, operators)
        kept = tuple(
            path
            for path in tested_fields
            if operators.get(path, set()) <= _KEYED_BY_VALUE
            and (path in FIELD_VOCABULARIES or path.partition(".")[0] in CONTEXT_ROOTS)
        )
        texts = {path: _equal_texts(units[path]) for path in tested_fields if path not in kept}
        folded = tuple((path, found) for path, found in texts.items() if found is not None)
        self._kept: Callable[[Mapping[str, Any]], tuple[Any, ...]] = _getter(kept)
        self._folded = folded
        self._free = tuple(
            (path, tuple(_unique_predicates(units[path])), Kept[str, Answers](MEMO_SIZE))
            for path, found in texts.items()
            if found is None
        )
        self._plain: dict[tuple[type, ...], bool] = {}

    def key(self, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """What the ruleset's tests can tell apart in `values` (a lead's tested fields, as `field_values` reads them),
        or None when a value cannot be part of a key (the lead is then scored by its rules)."""
        kept = self._kept(values)
        types = tuple(map(type, kept))
        plain = self._plain.get(types)
        if plain is None:
            plain = self._plain[types] = set(types) <= _PLAIN_TYPES
        if not plain:
            return None
        parts: list[Any] = [kept, types]
        for path, texts in self._folded:
            value = values[path]
            if type(value) is str:
                text = value.strip().casefold()
                parts.append(text if text in texts else _OTHER)
            elif value is None:
                parts.append(None)
            else:  # a number, a list...: the language's own comparisons, left to the rules
                return None
        for path, predicates, memo in self._free:
            value = values[path]
            if value is None:
                parts.append(None)
            elif type(value) is str and len(value) <= MEMO_MAX_TEXT:
                answers = memo.get(value)
                if answers is None:
                    answers = memo.keep(value, _answers(predicates, value))
                parts.append(answers)
            else:
                parts.append(_answers(predicates, value))
        return tuple(parts)


def _answers(predicates: tuple[Predicate, ...], value: Any) -> Answers:
    def resolve(_path: str) -> Any:
        return value

    return tuple([bool(predicate(resolve)) for predicate in predicates])


def _collect(condition: Condition, units: dict[str, list[Condition]], operators: dict[str, set[str]]) -> None:
    """The condition's tests by field, as units the rules' compilation evaluates as one (see `_any_parts` in
    common.conditions.predicates: an `any`'s regex tests of one field are one alternation), and each field's
    operators."""
    if isinstance(condition, AnyOf):
        regexes: dict[str, list[FieldTest]] = {}
        for part in condition.parts:
            if isinstance(part, FieldTest) and part.operator == "regex":
                regexes.setdefault(part.field, []).append(part)
        for part in condition.parts:
            group = regexes.get(part.field) if isinstance(part, FieldTest) and part.operator == "regex" else None
            if group is None or len(group) == 1:
                _collect(part, units, operators)
            elif group[0] is part:
                units.setdefault(part.field, []).append(AnyOf(tuple(group)))
                operators.setdefault(part.field, set()).add("regex")
    elif isinstance(condition, AllOf):
        for part in condition.parts:
            _collect(part, units, operators)
    elif isinstance(condition, Not):
        _collect(condition.part, units, operators)
    elif condition.operator == "not":
        _collect(condition.argument, units, operators)
    else:
        units.setdefault(condition.field, []).append(condition)
        operators.setdefault(condition.field, set()).add(condition.operator)


def _equal_texts(units: list[Condition]) -> frozenset[str] | None:
    """Every folded text a field's tests compare a text with, when each is a lone `equals` / `one_of` without
    numbers (a text then answers each by its folded text's membership in that test's texts), else None."""
    found: set[str] = set()
    for unit in units:
        if not isinstance(unit, FieldTest) or unit.operator not in ("equals", "one_of"):
            return None
        options = (unit.argument,) if unit.operator == "equals" else unit.argument
        if any(option.number is not None for option in options):
            return None
        found.update(option.folded for option in options)
    return frozenset(found)


def _unique_predicates(units: list[Condition]) -> list[Predicate]:
    """Each distinct unit compiled once (`qualified.unless` repeats rules' conditions)."""
    seen: dict[Condition, Predicate] = {}
    for unit in units:
        if unit not in seen:
            seen[unit] = compile_condition(unit)
    return list(seen.values())


def _getter(paths: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    if not paths:
        return lambda values: ()
    if len(paths) == 1:
        path = paths[0]
        return lambda values: (values[path],)
    return itemgetter(*paths)
