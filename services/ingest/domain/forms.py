"""What a web form's body holds besides the lead: how it is read, and the fields that are not the person's."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

HONEYPOT_FIELDS = ("_gotcha", "_honeypot", "hp_website")
PUBLISHABLE_KEY_FIELD = "_key"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def form_fields(text: str) -> dict[str, Any]:
    """A form-urlencoded body as fields; a repeated name (a group of checkboxes) keeps every value."""
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True, errors="strict"):
        if key in fields:
            previous = fields[key]
            fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[key] = value
    return fields


def submitted_fields(content_type: str, body: str) -> dict[str, Any]:
    """A kept submission's body as fields, without the publishable key and honeypot fields ({} if unreadable)."""
    try:
        if content_type == FORM_CONTENT_TYPE:
            fields = form_fields(body)
        else:
            parsed = orjson.loads(body)
            fields = parsed if isinstance(parsed, dict) else {}
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return {}
    for name in (PUBLISHABLE_KEY_FIELD, *HONEYPOT_FIELDS):
        fields.pop(name, None)
    return fields
