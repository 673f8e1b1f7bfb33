"""Scoring's view of the shared condition language (common.conditions): which paths it resolves, and how.

The language itself (paths, operators, comparisons, errors, RE2 regexes) lives in common.conditions, shared
with routing rules. Scoring adds the value sets its own domain produces, so a rule comparing against
anything else is refused at PUT time, and resolves every path but `score.*` (it is computing that).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from common.conditions import (
    COMBINATORS,
    COUNTRY_FIELDS,
    ENRICHMENT_FIELDS,
    LEAD_FIELDS,
    LEAD_MAPS,
    MAX_MATCH_LENGTH,
    OPERATORS,
    ROOTS,
    AllOf,
    AnyOf,
    Catalog,
    Condition,
    FieldTest,
    Not,
    Resolver,
    Scalar,
    compile_regex,
    describe,
    evaluate,
    is_present,
)
from common.conditions import known_field_paths as _known_field_paths
from scoring.domain.emails import EMAIL_TYPES
from scoring.domain.firmographics import EMPLOYEE_BANDS
from scoring.domain.phones import LINE_TYPES
from scoring.domain.titles import FUNCTIONS, SENIORITIES

# Values the domain itself produces: a rule comparing against anything else can never fire.
FIELD_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "enrichment.email_type": EMAIL_TYPES,
    "enrichment.seniority": SENIORITIES,
    "enrichment.function": FUNCTIONS,
    "enrichment.company.employee_band": EMPLOYEE_BANDS,
    "enrichment.phone_line_type": LINE_TYPES,
}
SCORING_ROOTS: tuple[str, ...] = tuple(root for root in ROOTS if root != "score")
CATALOG = Catalog(roots=SCORING_ROOTS, strict=True, vocabularies=FIELD_VOCABULARIES, service="scoring")
# Facts about the submission rather than the lead, passed in by the caller (the scoring handler).
CONTEXT_ROOTS: tuple[str, ...] = ("source", "is_test", "duplicate_of", "repeat_count")


def known_field_paths() -> list[str]:
    """Every fixed field path a scoring condition may address (open maps accept any sub-key too)."""
    return _known_field_paths(SCORING_ROOTS)


def check_field_path(path: str) -> bool:
    """True if `path` names a field the scorer can resolve."""
    return CATALOG.problem(path) is None


def context_resolver(
    lead: Mapping[str, Any], fields: Mapping[str, Any], whole: Mapping[str, Any], context: Mapping[str, Any]
) -> Resolver:
    """Resolve canonical paths: lead.* from the lead, enrichment.* from `fields`/`whole`, the rest from context.

    Quality flags come from the context when the caller passes them, else from the lead itself. Each path is
    looked up once: a ruleset tests the same fields in several rules.
    """
    seen: dict[str, Any] = {}

    def resolve(path: str) -> Any:
        value = seen.get(path, _MISSING)
        if value is _MISSING:
            value = seen[path] = _lookup(path, lead, fields, whole, context)
        return value

    return resolve


def field_values(
    paths: tuple[str, ...],
    lead: Mapping[str, Any],
    fields: Mapping[str, Any],
    whole: Mapping[str, Any],
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """`paths` resolved as `context_resolver` resolves them, all at once: a ruleset's compiled rules then read
    them with `.__getitem__` (a C call) instead of a Python resolver per test. The paths are sorted by where
    they are looked up once per ruleset (`_plan`); the lead's and enrichment's own keys are read in one pass each."""
    top, walked, enriched = _plan(paths)
    if type(lead) is dict:
        values = {path: lead.get(key) for path, key in top}
    else:
        values = {path: _walk(lead, (key,)) for path, key in top}
    for path, where, keys in walked:
        if where == "lead":
            values[path] = _walk(lead, keys)
        elif where == "context":
            values[path] = _walk(context, keys)
        else:
            values[path] = _lookup(path, lead, fields, whole, context)
    for path in enriched:
        value = fields.get(path, _MISSING)
        values[path] = whole.get(path) if value is _MISSING else value
    return values


@lru_cache(maxsize=64)
def _plan(
    paths: tuple[str, ...],
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, tuple[str, ...]], ...], tuple[str, ...]]:
    """`paths` split by where `_lookup` finds them: a lead's top-level keys (path, key), the rest of the lead and
    the context's paths (path, where, keys), and the enrichment's paths."""
    routes = [(path, *_route(path)) for path in paths]
    top = tuple((path, keys[0]) for path, where, keys in routes if where == "lead" and len(keys) == 1)
    walked = tuple(
        (path, where, keys) for path, where, keys in routes if where != "enrichment" and (path, keys[0]) not in top
    )
    return top, walked, tuple(path for path, where, _ in routes if where == "enrichment")


def _lookup(
    path: str, lead: Mapping[str, Any], fields: Mapping[str, Any], whole: Mapping[str, Any], context: Mapping[str, Any]
) -> Any:
    where, parts = _route(path)
    if where == "lead":
        return _walk(lead, parts)
    if where == "context":
        return _walk(context, parts)
    if where == "quality":
        quality = context.get("quality") if context.get("quality") is not None else lead.get("quality")
        return _walk({"quality": quality}, parts)
    if path in fields:
        return fields[path]
    return whole.get(path)


_MISSING = object()


@lru_cache(maxsize=4096)
def _route(path: str) -> tuple[str, tuple[str, ...]]:
    """Where a canonical path is looked up, and its keys there: worked out once per path, not once per lead."""
    root, _, rest = path.partition(".")
    if root == "lead":
        return "lead", tuple(rest.split("."))
    if root in CONTEXT_ROOTS:
        return "context", tuple(path.split("."))
    if root == "quality":
        return "quality", tuple(path.split("."))
    return "enrichment", ()


def _walk(root: Any, keys: tuple[str, ...]) -> Any:
    """common.conditions.walk with the keys split once; a plain dict skips the (slow) ABC check."""
    value = root
    for key in keys:
        if type(value) is not dict and not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


__all__ = [
    "CATALOG",
    "COMBINATORS",
    "COUNTRY_FIELDS",
    "ENRICHMENT_FIELDS",
    "FIELD_VOCABULARIES",
    "LEAD_FIELDS",
    "LEAD_MAPS",
    "MAX_MATCH_LENGTH",
    "OPERATORS",
    "AllOf",
    "AnyOf",
    "Condition",
    "FieldTest",
    "Not",
    "Resolver",
    "Scalar",
    "check_field_path",
    "compile_regex",
    "context_resolver",
    "describe",
    "evaluate",
    "field_values",
    "is_present",
    "known_field_paths",
]
