"""Reading the time a lead was submitted, whatever unit or format a platform sends it in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

# A visitor's clock may run a little ahead; beyond this a submitted_at is clamped to now (and flagged).
FUTURE_TOLERANCE = timedelta(minutes=5)


def parse_datetime(value: Any) -> datetime:
    """ISO 8601 string, Unix seconds/milliseconds or datetime -> aware UTC datetime (naive means UTC)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, bool):
        raise ValueError("not a date-time")
    elif isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip())):
        seconds = float(value)
        # Platforms disagree on units; anything past year ~5000 in seconds is really milliseconds.
        if seconds > 1e11:
            seconds /= 1000
        dt = datetime.fromtimestamp(seconds, tz=UTC)
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value.strip())
    else:
        raise ValueError("not a date-time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
