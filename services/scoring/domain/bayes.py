"""Conversion probability learned from won/lost outcomes: categorical naive Bayes, Laplace-smoothed.

A third number next to fit and intent. Rules say what marketing believes; this says what past
outcomes show. It stays silent (status "insufficient_data") until enough outcomes of both kinds exist.

For a lead with features f_1..f_n (one value per field), in log space:

    log odds(won) = log (W + a) / (L + a)
                  + sum_i [ log P(f_i | won) - log P(f_i | lost) ]
    P(f = v | won) = (won_v + a) / (W + a * V_f)      (likewise for lost)

W, L: outcomes won and lost; won_v: won outcomes with that value; V_f: distinct values of that field
seen in any outcome; a: the smoothing alpha. A value never seen in any outcome carries no evidence
and is skipped. Each summand is a factor; the largest for and against are reported with counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The categorical facts the model learns from. No PII: no names, emails, phones, free text or
# company names, only values shared by many leads. Order is the order features are reported in.
OUTCOME_FEATURES: tuple[str, ...] = (
    "lead.country",
    "lead.language",
    "lead.utm.source",
    "lead.utm.medium",
    "lead.utm.campaign",
    "lead.form_id",
    "context.source.kind",
    "enrichment.email_type",
    "enrichment.company.employee_band",
    "enrichment.company.industry",
    "enrichment.company.revenue_band",
    "enrichment.seniority",
    "enrichment.function",
    "enrichment.phone_line_type",
)
MAX_VALUE_LENGTH = 100
TOP_FACTORS = 3


@dataclass
class OutcomeCounts:
    """Won/lost tallies overall and per (field, value); what the store keeps."""

    won_total: int = 0
    lost_total: int = 0
    by_feature: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # V_f per field when `by_feature` holds only the lead's own values (as a store query returns them);
    # without it V_f is counted from `by_feature`, which then must hold every value seen.
    values_per_field: dict[str, int] = field(default_factory=dict)

    def record(self, features: Iterable[tuple[str, str]], *, won: bool) -> None:
        """Count one outcome: the lead's features were won (True) or lost (False)."""
        if won:
            self.won_total += 1
        else:
            self.lost_total += 1
        for feature in set(features):
            won_count, lost_count = self.by_feature.get(feature, (0, 0))
            self.by_feature[feature] = (won_count + 1, lost_count) if won else (won_count, lost_count + 1)


@dataclass(frozen=True)
class Conversion:
    """Probability that the lead converts, or why there is none, and the features that moved it most."""

    probability: float | None
    status: str
    outcomes_seen: int
    factors_for: list[dict[str, Any]]
    factors_against: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "probability": self.probability,
            "status": self.status,
            "outcomes_seen": self.outcomes_seen,
            "factors_for": [dict(item) for item in self.factors_for],
            "factors_against": [dict(item) for item in self.factors_against],
        }


def _walk(root: Any, parts: Sequence[str]) -> Any:
    value = root
    for part in parts:
        if type(value) is not dict and not isinstance(value, Mapping):  # a plain dict skips the slow ABC check
            return None
        value = value.get(part)
    return value


def _normalize(path: str, value: Any) -> str | None:
    if type(value) is str:
        text = value.strip()
    elif value is None or isinstance(value, Mapping | list | tuple | set | frozenset):
        return None
    else:
        text = str(value).strip()
    if not text:
        return None
    text = text.upper() if path.endswith("country") else text.casefold()
    return text[:MAX_VALUE_LENGTH]


# Each feature's root, keys and case (countries upper, the rest folded), worked out once rather than once per lead.
_FEATURE_ROUTES: tuple[tuple[str, str, tuple[str, ...], bool], ...] = tuple(
    (path, path.partition(".")[0], tuple(path.partition(".")[2].split(".")), path.endswith("country"))
    for path in OUTCOME_FEATURES
)
# The lead's and context's features, then the enrichment's (OUTCOME_FEATURES lists them in that order).
_LEAD_ROUTES = tuple(route for route in _FEATURE_ROUTES if route[1] in ("lead", "context"))
_ENRICHMENT_ROUTES = _FEATURE_ROUTES[len(_LEAD_ROUTES) :]
if _LEAD_ROUTES + _ENRICHMENT_ROUTES != _FEATURE_ROUTES or any(r[1] != "enrichment" for r in _ENRICHMENT_ROUTES):
    raise RuntimeError("OUTCOME_FEATURES: the lead's and context's features come first, the enrichment's last")


def outcome_features(
    lead: Mapping[str, Any],
    enrichment_fields: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """The lead's (field, value) pairs for OUTCOME_FEATURES, normalized; missing values are left out.

    `enrichment_fields` is Enrichment.as_fields(); context.* may come from `context` or be merged
    into `enrichment_fields` under its "context...." key.
    """
    return lead_features(lead, enrichment_fields, context=context) + enrichment_features(enrichment_fields)


def batch_features(
    leads: Sequence[Mapping[str, Any]],
    all_fields: Sequence[Mapping[str, Any]],
    contexts: Sequence[Mapping[str, Any] | None],
) -> list[list[tuple[str, str]]]:
    """`outcome_features` of each lead of a batch, the enrichment's part worked out once per distinct fields mapping
    (leads alike share one: scoring.domain.enrichment.EnrichmentMemo), by identity: all of them are alive here."""
    shared: dict[int, list[tuple[str, str]]] = {}
    batch = []
    for lead, fields, context in zip(leads, all_fields, contexts, strict=True):
        tail = shared.get(id(fields))
        if tail is None:
            tail = shared[id(fields)] = enrichment_features(fields)
        batch.append(lead_features(lead, fields, context=context) + tail)
    return batch


def lead_features(
    lead: Mapping[str, Any],
    enrichment_fields: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """`outcome_features`' leading part: the lead's and the context's features."""
    features: list[tuple[str, str]] = []
    plain = type(lead) is dict
    for path, root, keys, upper in _LEAD_ROUTES:
        if root == "lead":
            raw = lead.get(keys[0]) if plain and len(keys) == 1 else _walk(lead, keys)
        else:
            raw = enrichment_fields.get(path)
            if raw is None and context is not None:
                raw = _walk(context, keys)
        if type(raw) is str:  # most values: `_add`'s text case without its call
            text = raw.strip()
            if text:
                features.append((path, (text.upper() if upper else text.casefold())[:MAX_VALUE_LENGTH]))
        elif raw is not None:
            _add(features, path, raw, upper)
    return features


def enrichment_features(enrichment_fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`outcome_features`' trailing part, the enrichment's features: what leads sharing one enrichment share."""
    features: list[tuple[str, str]] = []
    for path, _root, _keys, upper in _ENRICHMENT_ROUTES:
        _add(features, path, enrichment_fields.get(path), upper)
    return features


def _add(features: list[tuple[str, str]], path: str, raw: Any, upper: bool) -> None:
    if raw is None:
        return
    if type(raw) is str:  # most values: `_normalize`'s text case without its call
        text = raw.strip()
        if text:
            features.append((path, (text.upper() if upper else text.casefold())[:MAX_VALUE_LENGTH]))
        return
    value = _normalize(path, raw)
    if value is not None:
        features.append((path, value))


def conversion_probability(
    features: list[tuple[str, str]],
    counts: OutcomeCounts,
    *,
    alpha: float = 1.0,
    min_outcomes: int = 30,
) -> Conversion:
    """P(won | features) by naive Bayes; "insufficient_data" below `min_outcomes` or with one class only."""
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    won_total, lost_total = counts.won_total, counts.lost_total
    seen = won_total + lost_total
    if seen < min_outcomes or won_total == 0 or lost_total == 0:
        return Conversion(
            probability=None,
            status="insufficient_data",
            outcomes_seen=seen,
            factors_for=[],
            factors_against=[],
        )

    values_per_field: dict[str, int] = {}
    for field_name, _value in counts.by_feature:
        values_per_field[field_name] = values_per_field.get(field_name, 0) + 1
    for field_name, distinct in counts.values_per_field.items():
        values_per_field[field_name] = max(distinct, values_per_field.get(field_name, 0))

    log_odds = math.log((won_total + alpha) / (lost_total + alpha))
    factors: list[dict[str, Any]] = []
    for field_name, value in dict.fromkeys(features):
        if (field_name, value) not in counts.by_feature:
            continue
        won, lost = counts.by_feature[(field_name, value)]
        distinct = values_per_field[field_name]
        p_won = (won + alpha) / (won_total + alpha * distinct)
        p_lost = (lost + alpha) / (lost_total + alpha * distinct)
        weight = math.log(p_won) - math.log(p_lost)
        log_odds += weight
        factors.append({"field": field_name, "value": value, "weight": weight, "won": won, "lost": lost})

    probability = _sigmoid(log_odds)
    ranked_for = sorted((f for f in factors if f["weight"] > 0), key=lambda f: -f["weight"])[:TOP_FACTORS]
    ranked_against = sorted((f for f in factors if f["weight"] < 0), key=lambda f: f["weight"])[:TOP_FACTORS]
    return Conversion(
        probability=probability,
        status="ok",
        outcomes_seen=seen,
        factors_for=[_public(f) for f in ranked_for],
        factors_against=[_public(f) for f in ranked_against],
    )


def _sigmoid(log_odds: float) -> float:
    # Two branches so that exp() never overflows for extreme evidence.
    if log_odds >= 0:
        return 1.0 / (1.0 + math.exp(-log_odds))
    odds = math.exp(log_odds)
    return odds / (1.0 + odds)


def _public(factor: dict[str, Any]) -> dict[str, Any]:
    return {**factor, "weight": round(factor["weight"], 4)}
