"""A rule's answer remembered by the values it read.

Job titles, form ids, page URLs and campaigns repeat from lead to lead, and a rule's answer depends on nothing but
the values of the fields it tests: a regex test on a value seen before need not run again (an RE2 search from
Python costs ~2 us, a dict look-up ~0.1). An `any` is remembered part by part, its parts grouped by the fields they
read, so a title that repeats is answered from memory even beside an address that never does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from common.conditions.predicates import Predicate, Resolver, compile_condition, condition_fields
from scoring.domain.conditions import AnyOf, Condition

# Answers kept per part: a full memo starts again, so values that never repeat (addresses) cost a bounded dict.
MEMO_SIZE = 1024
# Longer texts (messages) are rarely sent twice: they are tested as they come, never kept.
MEMO_MAX_TEXT = 256

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(dict[K, V]):
    """Values kept by what they are made of, at most `size`: a full one starts again (a bounded dict whose misses,
    values that never repeat, cost no eviction order to keep)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def keep(self, key: K, value: V) -> V:
        """Keep `value` under `key` and return it."""
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value


def memoized(condition: Condition, compiled: Predicate) -> Predicate:
    """`compiled`, the predicate of `condition`, answering from memory for values it has answered before: the same
    answers (a predicate reads its fields' values only). Values other than short texts are tested every time."""
    parts = condition.parts if isinstance(condition, AnyOf) else (condition,)
    groups: dict[tuple[str, ...], list[Condition]] = {}
    for part in parts:
        groups.setdefault(tuple(sorted(condition_fields(part))), []).append(part)
    if len(groups) == 1:
        return _remembered(next(iter(groups)), compiled)
    # Each group compiled as the condition's own compilation would (an any's regexes of one field: one search).
    units = [
        _remembered(fields, compile_condition(group[0] if len(group) == 1 else AnyOf(tuple(group))))
        for fields, group in groups.items()
    ]
    return _some(units)


def _remembered(fields: Sequence[str], predicate: Predicate) -> Predicate:
    if not fields:  # reads nothing: nothing to remember it by
        return predicate
    if len(fields) == 1:
        return _by_value(fields[0], predicate)
    return _by_values(tuple(fields), predicate)


def _by_value(field: str, predicate: Predicate) -> Predicate:
    memo: Kept[str, bool] = Kept(MEMO_SIZE)

    def holds(resolve: Resolver) -> bool:
        value = resolve(field)
        if type(value) is not str or len(value) > MEMO_MAX_TEXT:
            return predicate(resolve)
        answer = memo.get(value)
        if answer is None:
            answer = memo.keep(value, bool(predicate(resolve)))
        return answer

    return holds


def _by_values(fields: tuple[str, ...], predicate: Predicate) -> Predicate:
    memo: Kept[tuple[str | None, ...], bool] = Kept(MEMO_SIZE)

    def holds(resolve: Resolver) -> bool:
        key = tuple([resolve(field) for field in fields])
        for value in key:
            if value is not None and (type(value) is not str or len(value) > MEMO_MAX_TEXT):
                return predicate(resolve)
        answer = memo.get(key)
        if answer is None:
            answer = memo.keep(key, bool(predicate(resolve)))
        return answer

    return holds


def _some(units: Sequence[Callable[[Resolver], bool]]) -> Predicate:
    def some(resolve: Resolver) -> bool:
        for unit in units:  # noqa: SIM110 - a plain loop: any() of a generator costs a frame per lead and rule
            if unit(resolve):
                return True
        return False

    return some
