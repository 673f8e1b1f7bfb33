"""The writer's lead and event ids: random version-4 UUIDs in their usual text form, never repeated."""

import uuid

from ingest.handlers.batch import uuid4_strings


def test_ids_are_version_4_uuids_in_canonical_text() -> None:
    ids = uuid4_strings(500)
    assert len(ids) == 500
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat_within_or_across_calls() -> None:
    ids = uuid4_strings(1000) + uuid4_strings(1000)
    assert len(set(ids)) == 2000
    assert uuid4_strings(0) == []
