"""Values a scored lead's row and event are made of: its conversion answer's dict, the received time."""

from __future__ import annotations

from datetime import datetime
from typing import Any


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
