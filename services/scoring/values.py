"""Values a scored lead's row and event are made of: its conversion answer's dict, the received time, JSON
serialized once for leads that share it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common.envelope import dumps
from scoring.domain.memo import Kept


def conversion_dict(conversion: Any) -> dict[str, Any]:
    """A `Conversion` as the lead.scored event and the stored row carry it."""
    return {
        "probability": conversion.probability,
        "status": conversion.status,
        "outcomes_seen": conversion.outcomes_seen,
        "factors_for": list(conversion.factors_for),
        "factors_against": list(conversion.factors_against),
    }


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time, or None when missing or malformed."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def serialize_once(serialized: dict[int, tuple[bytes, str]], shared: object, value: Any) -> tuple[bytes, str]:
    """`value` (what `shared` is serialized as) as JSON bytes and text, kept in `serialized` by `shared`'s id: for
    objects leads share within a batch, all alive until it is written (so no id is reused meanwhile)."""
    raw = dumps(value)
    pair = serialized[id(shared)] = (raw, raw.decode())
    return pair


# Distinct feature lists whose JSON is kept: a full memo starts again.
FEATURES_KEPT = 1024


class FeatureTexts:
    """A lead's outcome features as JSON text, kept by their values: they are a few categorical values a lead
    (country, address type, seniority, function, source...), so leads alike share one text."""

    def __init__(self, size: int = FEATURES_KEPT) -> None:
        self._kept: Kept[tuple[tuple[str, str], ...], str] = Kept(size)

    def text(self, features: list[tuple[str, str]]) -> str:
        key = tuple(features)
        text = self._kept.get(key)
        if text is None:
            text = self._kept.keep(key, dumps(features).decode())
        return text
