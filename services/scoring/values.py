"""Values a scored lead's row and event are made of: its conversion answer's dict, the received time, event ids."""

from __future__ import annotations

import os
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


def uuid4_texts(n: int) -> list[str]:
    """`n` random (version 4) UUIDs as text, as `str(uuid.uuid4())` writes them, from one read of the OS's random
    source: a batch's event ids without a system call and a UUID object each."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # the version: 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # the variant: RFC 4122
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]
