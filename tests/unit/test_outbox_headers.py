"""common.envelope.outbox_headers builds a batch's headers from what its events share: the same bytes as each event's
own methods give (the outbox's headers JSON, the Kafka headers, the record key), whatever the batch mixes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from common.envelope import Event, dumps, outbox_headers

_NOW = datetime(2026, 12, 5, 2, 0, 0, 123456, tzinfo=UTC)
_ODD_TEXTS = ["lead-1", "Zoë-✓", 'a "quoted" \\ one', "tab\tnew\nline\x00\x1f\x7f", "", "🙂", "\u2028"]


def _per_event(events: list[Event]) -> tuple[list[str], list[list[tuple[str, bytes]]], list[bytes]]:
    return (
        [dumps(event.header_texts()).decode() for event in events],
        [event.headers() for event in events],
        [event.key() for event in events],
    )


def _assert_same(events: list[Event]) -> None:
    batch = outbox_headers(events)
    assert (batch.json, batch.kafka, batch.keys) == _per_event(events)


def test_a_batch_sharing_source_type_and_time_gives_each_events_own_headers() -> None:
    events = [
        Event(type="lead.scored", source="/handoff/scoring", subject=f"lead-{i}", data={}, time=_NOW) for i in range(5)
    ]
    _assert_same(events)


def test_correlation_ids_present_empty_and_absent() -> None:
    events = [
        Event(type="lead.scored", source="/s", subject="lead-1", data={}, time=_NOW, correlation_id=correlation)
        for correlation in ("corr-1", None, "", 'Zoë "x"\n', None, "corr-2")
    ]
    _assert_same(events)


def test_texts_json_must_escape_and_texts_it_need_not() -> None:
    events = [
        Event(type=text or "t", source=text or "/s", subject=text or "s", data={}, id=text or "i", correlation_id=text)
        for text in _ODD_TEXTS
    ]
    _assert_same(events)


def test_times_sources_and_types_that_change_within_the_batch() -> None:
    # The same time as one object, as equal objects, other zones, naive, whole seconds; sources and types that
    # alternate, and equal texts that are other objects.
    later = _NOW + timedelta(seconds=1)
    times = [
        _NOW,
        _NOW,
        datetime.fromisoformat(_NOW.isoformat()),
        later.replace(microsecond=0),
        _NOW.astimezone(timezone(timedelta(hours=5, minutes=30))),
        _NOW.replace(tzinfo=None),
        _NOW,
    ]
    events = [
        Event(
            type=("lead.scored", "lead.assigned")[i % 2],
            source="".join(["/handoff/", ("scoring", "routing")[i % 3 == 0]]),
            subject=f"lead-{i}",
            data={},
            time=time,
            correlation_id=f"c-{i}" if i % 2 else None,
        )
        for i, time in enumerate(times * 3)
    ]
    _assert_same(events)


def test_an_empty_batch_and_one_event() -> None:
    _assert_same([])
    _assert_same([Event(type="lead.received", source="/handoff/ingest", subject="lead-1", data={"a": 1})])
