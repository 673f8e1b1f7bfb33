"""The writer's lead and event ids: time-ordered (version 7) UUIDs in their usual text form, never repeated."""

import time
import uuid

from ingest.handlers.ids import new_id, uuid7_strings


def test_ids_are_version_7_uuids_in_canonical_text_carrying_the_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = uuid7_strings(500)
    after = time.time_ns() // 1_000_000
    assert len(ids) == 500
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after  # the first 48 bits: Unix time in milliseconds


def test_later_ids_sort_after_earlier_ones() -> None:
    first = new_id()
    time.sleep(0.002)
    assert new_id() > first  # index order follows time: a new lead's keys land on the indexes' last pages


def test_ids_do_not_repeat_within_or_across_calls() -> None:
    ids = uuid7_strings(1000) + uuid7_strings(1000)
    assert len(set(ids)) == 2000
    assert uuid7_strings(0) == []


def test_the_random_bits_vary() -> None:
    # 74 random bits a millisecond: every position after the time takes many values across ids.
    ids = [i.replace("-", "")[12:] for i in uuid7_strings(2000)]
    for position in (1, 2, 3, 5, 6, 7, *range(8, 20)):
        assert len({i[position] for i in ids}) > 8, position
    assert {i[4] for i in ids} == set("89ab")
