"""Conditions compiled once per ruleset into closures, so a lead's rules do not re-dispatch on them (scoring uses
them; routing's rules are written in the same language).

`common.conditions.evaluate` walks a condition tree and branches on node types and operator names for every lead
and test. Here each tree becomes nested closures when the ruleset is loaded: the operator is chosen once, a rule's
folded argument texts become a frozenset, and the common case (a text value, or nothing) is decided inline. Any
other value (a number, a list, a boolean) goes to the shared `apply_test`, so the answers are the language's own;
tests/unit/scoring/test_scoring_predicates.py checks them against `evaluate` on the same cases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.conditions.operators import (
    MAX_MATCH_LENGTH,
    AllOf,
    AnyOf,
    Bounds,
    Condition,
    FieldTest,
    Not,
    Resolver,
    apply_test,
    is_present,
)
from common.conditions.regex import alternation

Predicate = Callable[[Resolver], bool]
Check = Callable[[Any], bool]


def compile_condition(condition: Condition) -> Predicate:
    """A function of a resolver that answers what `evaluate(condition, resolver)` answers."""
    if isinstance(condition, AllOf):
        return _all(tuple(compile_condition(part) for part in condition.parts))
    if isinstance(condition, AnyOf):
        return _any(_any_parts(condition.parts))
    if isinstance(condition, Not):
        return _not(compile_condition(condition.part))
    if condition.operator == "not":
        return _not(compile_condition(condition.argument))
    return compile_test(condition)


def _any_parts(parts: tuple[Condition, ...]) -> tuple[Predicate, ...]:
    """An `any`'s parts compiled; its regex tests of one field become one test of their patterns' alternation (one
    RE2 search instead of one per pattern: RE2 finds a match of `(?:a)|(?:b)` exactly where `a` or `b` matches)."""
    regexes: dict[str, list[FieldTest]] = {}
    for part in parts:
        if isinstance(part, FieldTest) and part.operator == "regex":
            regexes.setdefault(part.field, []).append(part)
    compiled: list[Predicate] = []
    for part in parts:
        group = regexes.get(part.field) if isinstance(part, FieldTest) and part.operator == "regex" else None
        if group is None or len(group) == 1:
            compiled.append(compile_condition(part))
        elif group[0] is part:  # the group, compiled where its first test stands
            merged = alternation([test.argument for test in group])
            if merged is None:
                compiled.extend(compile_test(test) for test in group)
            else:
                compiled.append(_regex(part.field, merged.search, _any_generic(group)))
    return tuple(compiled)


def _any_generic(tests: list[FieldTest]) -> Check:
    def generic(value: Any) -> bool:
        return any(apply_test(test, value) for test in tests)

    return generic


def condition_fields(condition: Condition) -> frozenset[str]:
    """The canonical field paths a condition tests: what its predicate may ask its resolver for."""
    if isinstance(condition, (AllOf, AnyOf)):
        return frozenset().union(*(condition_fields(part) for part in condition.parts))
    if isinstance(condition, Not):
        return condition_fields(condition.part)
    if condition.operator == "not":
        return condition_fields(condition.argument)
    return frozenset((condition.field,))


def compile_test(test: FieldTest) -> Predicate:
    """One field test: resolves its field and answers what `apply_test(test, value)` answers."""
    field = test.field
    operator = test.operator
    if operator == "exists":
        wanted = test.argument
        return lambda resolve: is_present(resolve(field)) is wanted

    def generic(value: Any) -> bool:
        return value is not None and apply_test(test, value)

    if operator == "equals" and test.argument.number is None:
        return _text_in(field, frozenset((test.argument.folded,)), generic)
    if operator == "one_of" and all(option.number is None for option in test.argument):
        return _text_in(field, frozenset(option.folded for option in test.argument), generic)
    if operator == "contains":
        return _contains(field, test.argument.folded, generic)
    if operator == "regex":
        return _regex(field, test.argument.search, generic)
    if operator == "range":
        return _range(field, test.argument, generic)
    return lambda resolve: generic(resolve(field))


def _text_in(field: str, folded: frozenset[str], generic: Check) -> Predicate:
    # A text value equals a non-numeric argument when its trimmed, case-folded text does (blank matches nothing).
    def holds(resolve: Resolver) -> bool:
        value = resolve(field)
        if type(value) is str:
            text = value.strip()
            return bool(text) and text.casefold() in folded
        return generic(value)

    return holds


def _contains(field: str, folded: str, generic: Check) -> Predicate:
    def holds(resolve: Resolver) -> bool:
        value = resolve(field)
        if type(value) is str:
            return bool(value.strip()) and folded in value[:MAX_MATCH_LENGTH].casefold()
        return generic(value)

    return holds


def _regex(field: str, search: Callable[[str], bool], generic: Check) -> Predicate:
    def holds(resolve: Resolver) -> bool:
        value = resolve(field)
        if type(value) is str:
            return bool(value.strip()) and search(value[:MAX_MATCH_LENGTH])
        return value is not None and generic(value)  # most regex-tested fields are absent from most leads

    return holds


def _range(field: str, bounds: Bounds, generic: Check) -> Predicate:
    def holds(resolve: Resolver) -> bool:
        value = resolve(field)
        if type(value) is int:  # a count (repeat_count); bool is not int here, by the type test
            return bounds.holds(float(value))
        return generic(value)

    return holds


def _all(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]

    def every(resolve: Resolver) -> bool:
        for part in parts:  # noqa: SIM110 - a plain loop: all() of a generator costs a frame per lead and rule
            if not part(resolve):
                return False
        return True

    return every


def _any(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]

    def some(resolve: Resolver) -> bool:
        for part in parts:  # noqa: SIM110 - as above
            if part(resolve):
                return True
        return False

    return some


def _not(part: Predicate) -> Predicate:
    return lambda resolve: not part(resolve)
