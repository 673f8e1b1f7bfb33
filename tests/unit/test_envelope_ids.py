"""Event ids: an event made without one gets a new time-ordered id (common.ids, tested in test_common_ids), and the
envelope still reads its headers case-insensitively and refuses one that is not UTF-8."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC

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


def test_a_decoded_event_is_the_event_encoded_and_stays_frozen() -> None:
    # from_record builds the Event without the dataclass's __init__: the same fields, equality and immutability.
    for correlation_id in ("c-1", None):
        event = Event(type="t", source="/s", subject="Zoë", data={"a": [1, "é"]}, correlation_id=correlation_id)
        read = Event.from_record(b"other-key", event.value(), event.headers())
        assert read == event and repr(read) == repr(event) and type(read) is Event
        with pytest.raises(dataclasses.FrozenInstanceError):
            read.id = "x"  # type: ignore[misc]
    untimed = [(name, value) for name, value in event.headers() if name not in ("ce_time", "ce_subject")]
    read = Event.from_record(b"lead-9", event.value(), untimed)  # the key stands for the subject; time is now
    assert (read.subject, read.time.tzinfo) == ("lead-9", UTC)


@pytest.mark.parametrize(
    ("headers", "value", "message"),
    [
        ([("ce_id", b"1"), ("ce_type", b"t")], b"{}", "missing CloudEvents headers: ce_source, ce_specversion"),
        ([("ce_id", b"1"), ("ce_source", b"/s"), ("ce_specversion", b"0.3"), ("ce_type", b"t")], b"{}", "'0.3'"),
        (None, None, "no value"),
        (None, b"{not json", "not valid JSON"),
        (None, b"[1]", "must be a JSON object"),
        ([("ce_id", b"1"), ("ce_source", b"/s"), ("ce_specversion", b"1.0"), ("ce_type", b"t")], b"{}", "no subject"),
        (None, b"{}", "ce_time is not RFC 3339: 'soon'"),
    ],
)
def test_malformed_records_are_refused_with_their_reason(
    headers: list[tuple[str, bytes]] | None, value: bytes | None, message: str
) -> None:
    if headers is None:
        base = Event(type="t", source="/s", subject="lead-1", data={}).headers()
        headers = [(n, b"soon" if n == "ce_time" and "RFC" in message else v) for n, v in base]
    with pytest.raises(EnvelopeError, match=re.escape(message)):
        Event.from_record(None, value, headers)
