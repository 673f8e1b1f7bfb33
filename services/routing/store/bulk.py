"""Many rows into one table in one executemany, the statement compiled once per dialect, table and columns, the
rows handed to the driver as plain tuples: a routing batch writes a few hundred rows to each of four tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, DateTime, Table, insert


@dataclass(frozen=True)
class _Insert:
    """An INSERT of a table with a given set of columns, compiled once per dialect: its SQL, the row values it
    takes in its order, which of them go through their column type's bind processor (JSON, datetimes, booleans;
    `memo`: a time, of which a batch writes the same few over and over) and the columns' scalar defaults."""

    sql: str
    values: Callable[[Mapping[str, Any]], Any]  # a row's values in the statement's order (itemgetter)
    processed: tuple[tuple[int, Callable[[Any], Any], bool], ...]
    constants: tuple[tuple[int, Any], ...]  # a default the row does not give: its position and bound value


_PREBUILT: dict[tuple[str, str, str, tuple[str, ...]], _Insert | None] = {}


def _prebuilt(connection: Connection, table: Table, keys: tuple[str, ...]) -> _Insert | None:
    dialect = connection.dialect
    cache_key = (dialect.name, dialect.driver, table.name, keys)
    if cache_key in _PREBUILT:
        return _PREBUILT[cache_key]
    _PREBUILT[cache_key] = None  # unless it can be built below
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    names = compiled.positiontup if compiled.positional else None
    if not names or compiled.escaped_bind_names:
        return None
    given: list[str] = []
    processed: list[tuple[int, Callable[[Any], Any], bool]] = []
    constants: list[tuple[int, Any]] = []
    for position, name in enumerate(names):
        processor: Any = compiled._bind_processors.get(name)
        if processor is not None and not callable(processor):
            return None  # a tuple type's processors, per element
        if name in keys:
            given.append(name)
            if processor is not None:
                kind = table.c[name].type
                is_time = isinstance(getattr(kind, "impl", kind), DateTime)
                processed.append((position, processor, is_time))
            continue
        default = table.c[name].default if name in table.c else None
        if default is None or not default.is_scalar:
            return None
        value = default.arg  # type: ignore[attr-defined]
        constants.append((position, processor(value) if processor else value))
    if len(given) != len(keys):
        return None
    getter = itemgetter(*given)
    values = getter if len(given) > 1 else (lambda row: (getter(row),))
    found = _PREBUILT[cache_key] = _Insert(compiled.string, values, tuple(processed), tuple(constants))
    return found


def insert_many(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with the same columns in one executemany: the statement compiled once per table and columns, each row
    a plain tuple through the columns' bind processors (SQLAlchemy's executemany builds a parameter dict per row,
    defaults included, and processes each value). A statement that cannot be built so (a named paramstyle, a
    computed default) goes through SQLAlchemy's own executemany."""
    prebuilt = _prebuilt(connection, table, tuple(rows[0]))
    if prebuilt is None:
        connection.execute(insert(table), list(rows))
        return
    memos: dict[int, dict[Any, Any]] = {position: {} for position, _, memo in prebuilt.processed if memo}
    params = []
    for row in rows:
        values = list(prebuilt.values(row))
        for position, _value in prebuilt.constants:
            values.insert(position, _value)
        for position, process, _memo in prebuilt.processed:
            value = values[position]
            if value is None:
                values[position] = process(value)
            elif _memo:
                memo = memos[position]
                done = memo.get(value)
                if done is None:
                    done = memo[value] = process(value)
                values[position] = done
            else:
                values[position] = process(value)
        params.append(tuple(values))
    connection.exec_driver_sql(prebuilt.sql, params)
