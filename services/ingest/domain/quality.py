"""Quality: what was kept but could not be read, flagged by field, and custom values bounded so nothing bloats."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from ingest.domain.contacts import as_text
from ingest.domain.errors import FieldError
from ingest.domain.fields import MAX_CUSTOM_VALUE_LEN, CustomValue
from ingest.domain.text import clean_multiline

# Quality flags: what was kept but could not be read, one name per field and problem. The raw value sits in
# `quality.raw` under the field's path, so nothing the person typed is lost and a human can correct it.
SEMANTIC_FLAGS: dict[str, str] = {
    "email": "email_invalid",
    "phone": "phone_unparsed",
    "country": "country_unknown",
    "language": "language_unknown",
    "website": "website_invalid",
    "consent": "consent_unreadable",
}
MAX_RAW_LEN = 1000


def raw_value(value: Any) -> CustomValue:
    """An unreadable value as sent, bounded like a custom value so a pasted document cannot bloat every event."""
    kept = custom_value(value, truncate=True)
    return None if isinstance(kept, FieldError) else kept


def custom_value(value: Any, *, truncate: bool) -> CustomValue | FieldError:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else FieldError("", "not a finite number")
    if isinstance(value, datetime):
        value = value.isoformat()
    text = as_text(value)
    if text is None:
        # Nested objects are kept as compact JSON text so nothing is dropped, within the same limit.
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str, separators=(",", ":"))
        except (TypeError, ValueError):
            return FieldError("", "unsupported value")
    text = clean_multiline(text)
    if len(text) > MAX_CUSTOM_VALUE_LEN:
        if not truncate:
            return FieldError("", f"value longer than {MAX_CUSTOM_VALUE_LEN} characters")
        text = text[:MAX_CUSTOM_VALUE_LEN]
    return text
