"""Event ids: an event made without one gets a new time-ordered id (common.ids, tested in test_common_ids), and the
envelope still reads its headers case-insensitively and refuses one that is not UTF-8."""

from __future__ import annotations

import re
import uuid

import pytest

from common.envelope import EnvelopeError, Event

_UUID7_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_an_event_without_an_id_gets_a_new_one() -> None:
    one, two = (Event(type="t", source="/s", subject="lead-1", data={}) for _ in range(2))
    assert one.id != two.id and _UUID7_TEXT.fullmatch(one.id)
    assert uuid.UUID(one.id).version == 7 and str(uuid.UUID(one.id)) == one.id


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
