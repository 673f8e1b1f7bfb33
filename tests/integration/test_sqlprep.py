"""common.sqlprep on SQLite (the inline driver) and PostgreSQL: what a statement run at the driver writes and reads is
what the same Core statement would, values converted by their column types, errors SQLAlchemy's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Column, Connection, Integer, String, Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from common import sqlprep, sqlprep_session
from common.db import Database, UtcDateTime, new_metadata

pytestmark = pytest.mark.integration

_metadata = new_metadata()
_items = Table(
    "sqlprep_items",
    _metadata,
    Column("id", String(40), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=True),
    Column("doc", JSON, nullable=True),
    Column("flag", Boolean, nullable=False, default=False),
    Column("kind", String(20), nullable=False, default="plain"),
)
_stamped = Table(
    "sqlprep_stamped",
    _metadata,
    Column("id", String(40), primary_key=True),
    Column("token", String(40), nullable=False, default=lambda: uuid.uuid4().hex),
)
_log = Table("sqlprep_log", _metadata, Column("item_id", String(40), nullable=False), Column("at", UtcDateTime))

T0 = datetime(2026, 12, 3, 9, 30, 15, 123456, tzinfo=UTC)
_BY_N = sqlprep.Statement(select(_items.c.id, _items.c.n).where(_items.c.n >= bindparam("least")).order_by(_items.c.id))
_BUMP = sqlprep.Statement(update(_items).where(_items.c.id == bindparam("item")).values(n=_items.c.n + bindparam("by")))
_TOUCH = sqlprep.Many(
    ("m_id", "m_at"),
    update(_items).where(_items.c.id == bindparam("m_id")).values(at=bindparam("m_at", type_=_items.c.at.type)),
    _log.insert().values(item_id=bindparam("m_id"), at=bindparam("m_at", type_=_log.c.at.type)),
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)  # test tables of the module itself, not a service schema
    yield database
    await database.dispose()


def _rows(n: int) -> list[dict[str, Any]]:
    zone = timezone(timedelta(hours=-5))
    return [
        {"id": f"i{i:03}", "n": i, "at": (T0 + timedelta(minutes=i % 3)).astimezone(zone), "doc": {"k": [i, "é"]}}
        for i in range(n)
    ]


async def _all_items(db: Database) -> list[tuple[Any, ...]]:
    async with db.read() as session:
        return [tuple(row) for row in (await session.execute(select(_items).order_by(_items.c.id))).all()]


async def test_insert_many_writes_what_core_reads_back_with_types_and_defaults(db: Database) -> None:
    rows = _rows(100)
    async with db.transaction() as session:
        await sqlprep_session.in_one_hop(session, lambda conn: sqlprep.insert_many(conn, _items, rows))
    found = await _all_items(db)
    assert found == [(r["id"], r["n"], T0 + timedelta(minutes=r["n"] % 3), r["doc"], False, "plain") for r in rows]


async def test_insert_rows_in_a_session_and_a_computed_default_still_applied(db: Database) -> None:
    async with db.transaction() as session:
        await sqlprep_session.insert_rows(session, _items, [{"id": "a", "n": 1, "flag": True, "kind": "k"}])
        await sqlprep_session.insert_rows(session, _stamped, [{"id": "s1"}, {"id": "s2"}])
    assert await _all_items(db) == [("a", 1, None, None, True, "k")]
    async with db.read() as session:
        tokens = (await session.execute(select(_stamped.c.token))).scalars().all()
    assert len(set(tokens)) == 2 and all(len(token) == 32 for token in tokens)


async def test_statements_run_one_row_many_rows_and_fetch(db: Database) -> None:
    async with db.transaction() as session:
        await sqlprep_session.insert_rows(session, _items, _rows(5))

        def work(conn: Connection) -> tuple[int, int, list[Any]]:
            one = _BUMP.run(conn, {"item": "i000", "by": 10})
            many = _BUMP.run(conn, [{"item": "i001", "by": 20}, {"item": "i002", "by": 30}, {"item": "nope", "by": 1}])
            return one, many, _BY_N.fetch(conn, {"least": 4})

        one, many, fetched = await sqlprep_session.in_one_hop(session, work)
    assert one == 1 and many in (2, -1)  # asyncpg does not count an executemany's rows
    assert [tuple(row) for row in fetched] == [("i000", 10), ("i001", 21), ("i002", 32), ("i004", 4)]


async def test_keyed_statements_with_literal_constants(db: Database) -> None:
    async with db.transaction() as session:
        await sqlprep_session.insert_rows(session, _items, _rows(4))
        kinds = ("plain",)

        def work(conn: Connection) -> list[Any]:
            query = select(_items.c.id).where(_items.c.kind.in_(kinds), _items.c.n > 1).order_by(_items.c.id)
            return sqlprep.fetch(conn, ("test-kinds", kinds), lambda: query, literal=True)

        assert [row[0] for row in await sqlprep_session.in_one_hop(session, work)] == ["i002", "i003"]


async def test_many_feeds_several_statements_from_one_list_of_tuples(db: Database) -> None:
    later = T0 + timedelta(hours=1)
    async with db.transaction() as session:
        await sqlprep_session.insert_rows(session, _items, _rows(3))
        touched = [("i000", later), ("i002", later)]
        await sqlprep_session.in_one_hop(session, lambda conn: _TOUCH.run(conn, touched))
    assert [row[2] for row in await _all_items(db)] == [later, T0 + timedelta(minutes=1), later]
    async with db.read() as session:
        log = (await session.execute(select(_log).order_by(_log.c.item_id))).all()
    assert [tuple(row) for row in log] == [("i000", later), ("i002", later)]


async def test_hand_written_sqlite_reads_only_on_sqlite(db: Database) -> None:
    async with db.transaction() as session:
        await sqlprep_session.insert_rows(session, _items, _rows(3))
        rows = await sqlprep_session.sqlite_rows(
            session, "SELECT id FROM sqlprep_items WHERE n IN (SELECT value FROM json_each(?))", ["[0, 2]"]
        )
    if db.is_sqlite:
        assert sorted(row[0] for row in rows or []) == ["i000", "i002"]
    else:
        assert rows is None


async def test_errors_are_sqlalchemys_and_hide_the_values(db: Database) -> None:
    with pytest.raises(IntegrityError) as raised:
        async with db.transaction() as session:
            await sqlprep_session.insert_rows(
                session, _items, [{"id": "p7-secret", "n": 1}, {"id": "p7-secret", "n": 2}]
            )
    assert "p7-secret" not in str(raised.value)
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await sqlprep_session.insert_rows(session, _items, [{"id": "x", "n": 1}])
            await sqlprep_session.in_one_hop(
                session, lambda conn: sqlprep.insert_many(conn, _items, [{"id": "x", "n": 2}])
            )
    assert await _all_items(db) == []


async def test_a_sessions_later_transaction_writes_in_its_own_transaction(db: Database) -> None:
    async with db.sessions() as session:
        async with session.begin():
            await sqlprep_session.insert_rows(session, _items, [{"id": "first", "n": 1}])
        with pytest.raises(RuntimeError):
            async with session.begin():
                await sqlprep_session.insert_rows(session, _items, [{"id": "second", "n": 2}])
                assert await sqlprep_session.sqlite_rows(session, "SELECT count(*) FROM sqlprep_items", []) in (
                    [(2,)],
                    None,
                )
                raise RuntimeError("rolled back")
        async with session.begin():
            await sqlprep_session.insert_rows(session, _items, [{"id": "third", "n": 3}])
    assert [row[0] for row in await _all_items(db)] == ["first", "third"]
