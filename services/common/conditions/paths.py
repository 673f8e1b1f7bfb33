"""Field paths of the condition language: which paths exist, their aliases, and what one service can resolve."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

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
