"""Event ids: new_event_id writes what str(uuid.uuid4()) writes (a random version-4 RFC 4122 UUID), and the
envelope still reads its headers case-insensitively and refuses one that is not UTF-8."""

from __future__ import annotations

import re
import uuid

import pytest

from common.envelope import EnvelopeError, Event, new_event_id

_UUID4_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_new_event_ids_are_random_uuid4_texts() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        assert _UUID4_TEXT.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    # Every bit that uuid4 leaves random takes both values over the sample.
    values = [uuid.UUID(text).int for text in ids]
    fixed = (0xF000 << 64) | (0xC000 << 48)
    varying = 0
    for value in values:
        varying |= value ^ values[0]
    assert varying == ((1 << 128) - 1) & ~fixed


def test_an_event_without_an_id_gets_a_new_one() -> None:
    one, two = (Event(type="t", source="/s", subject="lead-1", data={}) for _ in range(2))
    assert one.id != two.id and _UUID4_TEXT.fullmatch(one.id)


def test_header_names_are_read_case_insensitively() -> None:
    event = Event(type="t", source="/s", subject="lead-1", data={"a": 1}, correlation_id="c-1")
    headers = [(name.upper(), value) for name, value in event.headers()]
    read = Event.from_record(event.key(), event.value(), headers)
    assert (read.id, read.type, read.source, read.subject, read.correlation_id, read.time) == (
        event.id,
        "t",
        "/s",
        "lead-1",
        "c-1",
        event.time,
    )


def test_a_header_that_is_not_utf8_is_refused() -> None:
    event = Event(type="t", source="/s", subject="lead-1", data={})
    with pytest.raises(EnvelopeError, match="UTF-8"):
        Event.from_record(event.key(), event.value(), [*event.headers(), ("x-extra", b"\xff\xfe")])
