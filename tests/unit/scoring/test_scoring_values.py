"""The values a scored lead's row and event are made of."""

from __future__ import annotations

import uuid

from scoring.values import uuid4_texts


def test_a_batch_of_event_ids_are_distinct_random_uuids_written_as_uuid4_writes_them() -> None:
    ids = uuid4_texts(2_000)
    assert len(ids) == len(set(ids)) == 2_000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    assert uuid4_texts(0) == []
