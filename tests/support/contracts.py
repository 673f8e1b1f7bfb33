"""Check events against the contracts in schemas/ (JSON Schema 2020-12), resolved locally, never online."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from common.topics import EVENT_TOPICS

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
EVENTS_DIR = SCHEMAS_DIR / "events"
HEADERS_SCHEMA = SCHEMAS_DIR / "cloudevent-headers.schema.json"
ASYNCAPI = SCHEMAS_DIR / "asyncapi.yaml"

# RFC 3339 section 5.6, offset required. jsonschema checks "date-time" only when the optional
# rfc3339-validator package is installed; a contract check must not depend on that silently.
_RFC3339 = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


_MAX_MESSAGE = 200


def schema_files() -> list[Path]:
    """Every JSON Schema file under schemas/."""
    return sorted(SCHEMAS_DIR.rglob("*.schema.json"))


def event_schema_path(event_type: str) -> Path:
    """Where the data schema of `event_type` lives: schemas/events/<type>.schema.json."""
    return EVENTS_DIR / f"{event_type}.schema.json"


def load_json(path: Path) -> dict[str, Any]:
    """A schema file's contents."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@functools.cache
def registry() -> Registry:
    """All schemas under their $id, so every $ref resolves from disk; anything else is unresolvable."""
    resources = []
    for path in schema_files():
        contents = load_json(path)
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def _format_checker() -> FormatChecker:
    checker = FormatChecker()

    @checker.checks("date-time")
    def is_rfc3339(value: object) -> bool:
        return not isinstance(value, str) or _RFC3339.match(value) is not None

    return checker


@functools.cache
def _validator(path: Path) -> Draft202012Validator:
    return Draft202012Validator(load_json(path), registry=registry(), format_checker=_format_checker())


def _location(error: ValidationError) -> str:
    return "/".join(str(part) for part in error.absolute_path) or "(root)"


def _describe(error: ValidationError) -> str:
    # anyOf/oneOf (nullable fields, an erased lead) say only "not valid under any": report the branch that got
    # deepest into the instance instead, so the message names the nested field that is wrong.
    while error.context:
        deepest = max(len(e.absolute_path) for e in error.context)
        closest = best_match(e for e in error.context if len(e.absolute_path) == deepest)
        if closest is None:
            break
        error = closest
    message = error.message
    if isinstance(error.instance, dict | list):
        # Messages quote the value: a whole lead in a test log would be personal data in clear.
        message = message.replace(repr(error.instance), "an object" if isinstance(error.instance, dict) else "a list")
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f"{_location(error)}: {message}"


def _errors(validator: Draft202012Validator, instance: Any) -> list[str]:
    found = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(error) for error in found]


def validate_event(event_type: str, data: Mapping[str, Any]) -> list[str]:
    """Problems with one event's data against its schema, as "<field path>: <problem>"; empty when valid."""
    path = event_schema_path(event_type)
    if not path.is_file():
        return [f"(type): no schema for event type {event_type!r} (expected {path.relative_to(SCHEMAS_DIR)})"]
    return _errors(_validator(path), dict(data))


def validate_headers(headers: Iterable[tuple[str, bytes]]) -> list[str]:
    """Problems with a record's CloudEvents headers (binary content mode); empty when valid."""
    problems: list[str] = []
    decoded: dict[str, str] = {}
    for name, raw in headers:
        if name in decoded:
            problems.append(f"{name}: header appears more than once")
            continue
        try:
            decoded[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{name}: header value is not UTF-8")
    return problems + _errors(_validator(HEADERS_SCHEMA), decoded)


def validate_record(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]],
    *,
    namespace: str = "",
) -> list[str]:
    """Problems with a whole Kafka record: headers, topic for its type, key = subject = data.lead_id, data."""
    headers = list(headers)
    problems = validate_headers(headers)
    attrs = {name: raw.decode("utf-8", "replace") for name, raw in headers}
    event_type = attrs.get("ce_type", "")
    subject = attrs.get("ce_subject")
    expected = EVENT_TOPICS.get(event_type)
    if expected is not None and topic != namespace + expected:
        problems.append(f"(topic): {event_type} belongs on {namespace + expected}, not {topic}")
    if key is None or key.decode("utf-8", "replace") != subject:
        problems.append(f"(key): the record key {key!r} is not the subject {subject!r}")
    try:
        data = json.loads(value) if value is not None else None
    except ValueError as exc:
        return [*problems, f"(value): not JSON: {exc}"]
    if not isinstance(data, dict):
        return [*problems, "(value): the event data must be a JSON object"]
    if data.get("lead_id") != subject:
        problems.append(f"lead_id: {data.get('lead_id')!r} is not the subject {subject!r}")
    return problems + validate_event(event_type, data)
