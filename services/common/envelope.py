"""The event envelope: CloudEvents 1.0 in Kafka binary mode (attributes in `ce_` headers, data as the value)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from common.ids import new_id

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
_REQUIRED = ("ce_id", "ce_source", "ce_specversion", "ce_type")


class EnvelopeError(ValueError):
    """A record that is not a valid Handoff CloudEvent; it can never succeed, so it goes to the dead-letter topic."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """One CloudEvent. `id` is the idempotency key consumers dedupe on; `subject` is the lead id and record key."""

    type: str
    source: str
    subject: str
    data: Mapping[str, Any]
    id: str = field(default_factory=new_id)  # time-ordered: it keys the next consumer's dedupe index
    time: datetime = field(default_factory=_utcnow)
    correlation_id: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers of the binary content mode."""
        return [(name, value.encode()) for name, value in self.header_texts()]

    def header_texts(self) -> list[tuple[str, str]]:
        """`headers()` before encoding: what the outbox stores as JSON, without a decode of each value back."""
        texts = [
            ("ce_specversion", SPECVERSION),
            ("ce_id", self.id),
            ("ce_source", self.source),
            ("ce_type", self.type),
            ("ce_time", self.time.isoformat()),
            ("ce_subject", self.subject),
            ("content-type", CONTENT_TYPE),
        ]
        if self.correlation_id:
            texts.append(("ce_correlationid", self.correlation_id))
        return texts

    def value(self) -> bytes:
        return dumps(self.data)

    def key(self) -> bytes:
        # CloudEvents' partitionkey extension maps to the record key: one lead's events stay in one partition.
        return self.subject.encode()

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> Event:
        """Decode a Kafka record; raises EnvelopeError for anything malformed."""
        try:
            attrs = {name.lower(): raw.decode() for name, raw in headers}
        except UnicodeDecodeError as exc:
            raise EnvelopeError("a header is not UTF-8") from exc
        missing = [name for name in _REQUIRED if not attrs.get(name)]
        if missing:
            raise EnvelopeError(f"missing CloudEvents headers: {', '.join(missing)}")
        if attrs["ce_specversion"] != SPECVERSION:
            raise EnvelopeError(f"unsupported specversion {attrs['ce_specversion']!r}")
        if value is None:
            raise EnvelopeError("the record has no value")
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"the value is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise EnvelopeError("the event data must be a JSON object")
        subject = attrs.get("ce_subject") or (key.decode("utf-8", "replace") if key else "")
        if not subject:
            raise EnvelopeError("the event has no subject (lead id)")
        try:
            time = datetime.fromisoformat(attrs["ce_time"]) if attrs.get("ce_time") else _utcnow()
        except ValueError as exc:
            raise EnvelopeError(f"ce_time is not RFC 3339: {attrs['ce_time']!r}") from exc
        return cls(
            type=attrs["ce_type"],
            source=attrs["ce_source"],
            subject=subject,
            data=data,
            id=attrs["ce_id"],
            time=time,
            correlation_id=attrs.get("ce_correlationid"),
        )


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def dumps(data: Any) -> bytes:
    """JSON as the services write it: UTF-8 as is (names round-trip byte for byte), datetimes in RFC 3339."""
    return orjson.dumps(data, default=_default, option=orjson.OPT_UTC_Z)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)
