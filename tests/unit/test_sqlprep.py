"""common.sqlprep's plans, without a database: the values a row becomes, in the statement's bind order, each
converted as its column converts it (a time once per distinct value), constants in their place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, String, Table, bindparam, case, select, update
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from common import sqlprep
from common.db import InlineSQLiteDialect, UtcDateTime, new_metadata, sqlite_time_text

pytestmark = pytest.mark.unit

_metadata = new_metadata()
_t = Table(
    "plans",
    _metadata,
    Column("id", String(10), primary_key=True),
    Column("n", Integer, nullable=False, default=7),
    Column("at", UtcDateTime),
)
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_the_inline_sqlite_dialect_is_recognised_and_others_are_not() -> None:
    assert sqlprep.is_inline_sqlite(InlineSQLiteDialect())
    assert not sqlprep.is_inline_sqlite(SQLiteDialect_pysqlite())
    assert not sqlprep.is_inline_sqlite(PGDialect_asyncpg())


def test_a_statements_rows_follow_its_bind_order_with_its_constants_in_place() -> None:
    statement = update(_t).where(_t.c.id == bindparam("key")).values(n=case((_t.c.n > 3, 0), else_=bindparam("n")))
    compiled = sqlprep.compile_for(SQLiteDialect_pysqlite(), statement)
    assert compiled.names == ("n_1", "param_1", "n", "key")  # the CASE's 3 and 0 are the statement's own
    assert compiled.rows([{"key": "a", "n": 5}, {"key": "b", "n": 6}]) == [(3, 0, 5, "a"), (3, 0, 6, "b")]
    assert compiled.params({"key": "c", "n": 1}) == (3, 0, 1, "c")


def test_times_are_converted_as_the_column_does_once_per_distinct_value() -> None:
    calls: list[Any] = []
    dialect = InlineSQLiteDialect()
    plan = sqlprep.insert_plan(dialect, _t, ("id", "at"))
    assert plan is not None
    position, process, memo = plan.processors[0]
    assert memo

    def counted(value: Any) -> Any:
        calls.append(value)
        return process(value)

    counting = sqlprep.Compiled(plan.sql, plan.names, plan.constants, ((position, counted, memo),), plan.getter)
    rows = [{"id": f"r{i}", "at": T0 + timedelta(seconds=i % 2)} for i in range(6)] + [{"id": "z", "at": None}]
    values = counting.rows(rows)
    assert len(calls) == 3  # two distinct times and the None
    assert plan.names == ("id", "n", "at")
    assert values[:2] == [("r0", 7, sqlite_time_text(T0)), ("r1", 7, sqlite_time_text(T0 + timedelta(seconds=1)))]
    assert values[-1] == ("z", 7, None)  # n: the column's default, the rows leaving it out


def test_a_named_paramstyle_gets_dicts() -> None:
    dialect = SQLiteDialect_pysqlite(paramstyle="named")
    compiled = sqlprep.compile_for(dialect, select(_t.c.id).where(_t.c.n == bindparam("n"), _t.c.id != "x"))
    assert compiled.names is None
    assert compiled.params({"n": 2}) == {"id_1": "x", "n": 2}
