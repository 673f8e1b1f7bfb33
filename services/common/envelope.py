"""The event envelope: CloudEvents 1.0 in Kafka binary mode (attributes in `ce_` headers, data as the value)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

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
        get = attrs.get
        event_id, source, type_, specversion = get("ce_id"), get("ce_source"), get("ce_type"), get("ce_specversion")
        if not (event_id and source and type_ and specversion):
            missing = [name for name in _REQUIRED if not get(name)]
            raise EnvelopeError(f"missing CloudEvents headers: {', '.join(missing)}")
        if specversion != SPECVERSION:
            raise EnvelopeError(f"unsupported specversion {specversion!r}")
        if value is None:
            raise EnvelopeError("the record has no value")
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"the value is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise EnvelopeError("the event data must be a JSON object")
        subject = get("ce_subject") or (key.decode("utf-8", "replace") if key else "")
        if not subject:
            raise EnvelopeError("the event has no subject (lead id)")
        time_text = get("ce_time")
        try:
            time = datetime.fromisoformat(time_text) if time_text else _utcnow()
        except ValueError as exc:
            raise EnvelopeError(f"ce_time is not RFC 3339: {time_text!r}") from exc
        event = object.__new__(cls)  # Event(...) with every field known, without the frozen __init__ (below)
        event.__dict__.update(
            type=type_,
            source=source,
            subject=subject,
            data=data,
            id=event_id,
            time=time,
            correlation_id=get("ce_correlationid"),
        )
        return event


# The Kafka headers and header JSON every event has (specversion, content type): made once, shared by every event.
_SPECVERSION_HEADER = ("ce_specversion", SPECVERSION.encode())
_CONTENT_TYPE_HEADER = ("content-type", CONTENT_TYPE.encode())
_JSON_HEAD = f'[["ce_specversion",{orjson.dumps(SPECVERSION).decode()}],["ce_id",'
_JSON_TAIL = f'],["content-type",{orjson.dumps(CONTENT_TYPE).decode()}]'


def _json_text(text: str) -> str:
    return orjson.dumps(text).decode()


class _Shared(NamedTuple):
    """What events of one source, type and time have alike in their headers: the JSON between ce_id's value and
    ce_subject's, and the three Kafka headers."""

    json: str
    source: tuple[str, bytes]
    type: tuple[str, bytes]
    time: tuple[str, bytes]


def _shared(source: str, type_: str, time_text: str) -> _Shared:
    json = f'],["ce_source",{_json_text(source)}],["ce_type",{_json_text(type_)}],["ce_time",{_json_text(time_text)}]'
    return _Shared(
        f'{json},["ce_subject",',
        ("ce_source", source.encode()),
        ("ce_type", type_.encode()),
        ("ce_time", time_text.encode()),
    )


class OutboxHeaders(NamedTuple):
    """A batch of events as the outbox writes them: each one's header texts as JSON (`dumps(header_texts())`,
    decoded), its Kafka headers (`headers()`) and its record key (`key()`), in the events' order."""

    json: list[str]
    kafka: list[list[tuple[str, bytes]]]
    keys: list[bytes]


def outbox_headers(events: Sequence[Event]) -> OutboxHeaders:
    """`OutboxHeaders` of `events`, the same to the byte as each event's own methods give, for less: what the events
    of a batch share (specversion, source, type, time, content type) is serialized and encoded once per distinct
    source, type and time, and only the id, the subject and the correlation id once per event."""
    jsons: list[str] = []
    kafka: list[list[tuple[str, bytes]]] = []
    keys: list[bytes] = []
    shared_of: dict[tuple[str, str, str], _Shared] = {}
    json_of = orjson.dumps
    time: datetime | None = None
    time_text = ""
    shared = _Shared("", ("", b""), ("", b""), ("", b""))
    source = type_ = ""
    for event in events:
        if event.time is not time or event.source is not source or event.type is not type_:
            if event.time is not time:  # the events of a batch mostly share one time object
                time = event.time
                time_text = time.isoformat()
            source, type_ = event.source, event.type
            found = shared_of.get((source, type_, time_text))
            if found is None:
                found = shared_of[source, type_, time_text] = _shared(source, type_, time_text)
            shared = found
        subject = event.subject.encode()
        headers = [
            _SPECVERSION_HEADER,
            ("ce_id", event.id.encode()),
            shared.source,
            shared.type,
            shared.time,
            ("ce_subject", subject),
            _CONTENT_TYPE_HEADER,
        ]
        json = f"{_JSON_HEAD}{json_of(event.id).decode()}{shared.json}{json_of(event.subject).decode()}{_JSON_TAIL}"
        if event.correlation_id:
            headers.append(("ce_correlationid", event.correlation_id.encode()))
            json = f'{json},["ce_correlationid",{json_of(event.correlation_id).decode()}]]'
        else:
            json += "]"
        jsons.append(json)
        kafka.append(headers)
        keys.append(subject)
    return OutboxHeaders(jsons, kafka, keys)


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def dumps(data: Any) -> bytes:
    """JSON as the services write it: UTF-8 as is (names round-trip byte for byte), datetimes in RFC 3339."""
    return orjson.dumps(data, default=_default, option=orjson.OPT_UTC_Z)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)
