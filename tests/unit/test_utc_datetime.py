"""UtcDateTime writes on SQLite the text SQLAlchemy's own DATETIME writes: stored values keep sorting and
comparing with the rows written before (and with SQL literals in migrations), whatever the value's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite.base import DATETIME

from common.db import UtcDateTime, as_utc

VALUES = [
    datetime(2026, 12, 3, 7, 53, 48, 793851, tzinfo=UTC),
    datetime(2026, 12, 3, 7, 53, 48, tzinfo=UTC),  # no microseconds: still six digits, as SQLAlchemy writes
    datetime(2026, 12, 3, 9, 53, 48, 5, tzinfo=timezone(timedelta(hours=2))),  # another zone: stored as UTC
    datetime(2026, 3, 29, 1, 30),  # naive: taken as UTC
    datetime(1, 1, 1, 0, 0, tzinfo=UTC),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: v.isoformat())
def test_sqlite_text_is_what_sqlalchemys_datetime_writes_for_the_utc_instant(value: datetime) -> None:
    dialect = sqlite.dialect()
    ours = UtcDateTime().bind_processor(dialect)
    theirs = DATETIME().bind_processor(dialect)
    assert ours is not None and theirs is not None
    assert ours(value) == theirs(as_utc(value).replace(tzinfo=None))
    assert ours(None) is None


def test_sqlite_text_sorts_as_the_instants_do() -> None:
    process = UtcDateTime().bind_processor(sqlite.dialect())
    assert process is not None
    texts = [process(v) for v in VALUES]
    assert sorted(texts) == [process(v) for v in sorted(VALUES, key=as_utc)]


def test_postgresql_gets_an_aware_utc_datetime() -> None:
    process = UtcDateTime().bind_processor(postgresql.dialect())
    value = datetime(2026, 12, 3, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    bound = process(value) if process else UtcDateTime().process_bind_param(value, postgresql.dialect())
    assert bound == value and bound.tzinfo is UTC
