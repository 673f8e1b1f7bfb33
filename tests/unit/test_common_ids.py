"""Ids (common.ids): time-ordered (version 7, RFC 9562) UUIDs in their usual text form, never repeated, sorting by
the time they were made, with 74 random bits each."""

from __future__ import annotations

import re
import time
import uuid

from common.ids import new_id, new_ids

# What a schema's "uuid" format and str(uuid.UUID(...)) accept: lower-case canonical text, version 7, variant 10.
_UUID7_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _check(ids: list[str], before: int, after: int) -> None:
    for text in ids:
        assert _UUID7_TEXT.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after  # the first 48 bits: Unix time in milliseconds


def test_ids_are_version_7_uuids_in_canonical_text_carrying_the_time() -> None:
    before = time.time_ns() // 1_000_000
    batch, singles = new_ids(500), [new_id() for _ in range(500)]
    after = time.time_ns() // 1_000_000
    assert len(batch) == 500
    _check(batch, before, after)
    _check(singles, before, after)
    assert new_ids(0) == []


def test_ids_are_distinct_over_a_large_batch_and_across_calls() -> None:
    ids = new_ids(50_000) + new_ids(50_000) + [new_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)


def test_ids_sort_by_the_time_they_were_made_across_milliseconds() -> None:
    # Index order follows time: a new row's keys land on the indexes' last pages.
    made: list[str] = []
    for _ in range(5):
        made += [new_id(), *new_ids(3)]
        time.sleep(0.002)
    stamps = [uuid.UUID(text).int >> 80 for text in made]
    assert len(set(stamps)) >= 5
    for earlier, stamp in zip(made, stamps, strict=True):
        for later, later_stamp in zip(made, stamps, strict=True):
            if stamp < later_stamp:
                assert earlier < later  # as text, as an index compares them


def test_every_random_bit_varies_and_the_marks_stay() -> None:
    # 74 random bits: over a sample each takes both values; the version (7) and variant (10) bits never change.
    marks = (0xF << 76) | (0x3 << 62)
    for ids in (new_ids(3000), [new_id() for _ in range(3000)]):
        values = [uuid.UUID(text).int & ((1 << 80) - 1) for text in ids]
        varying = 0
        for value in values:
            varying |= value ^ values[0]
        assert varying == ((1 << 80) - 1) & ~marks
        assert {value & marks for value in values} == {(0x7 << 76) | (0x2 << 62)}
