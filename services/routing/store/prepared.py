"""Statements compiled once per dialect and run on the session's connection as plain SQL with plain values: a
routing poll of one lead asks a dozen small questions, and SQLAlchemy's per-statement work (building the statement,
its cache key, the ORM's execution and result set-up) cost several times SQLite's answer to each. Used for the
statements whose values need no type processing (strings and integers) and whose shape does not vary (no IN
lists); several of them run in one `session.run_sync`, so a batch's reads or writes cost one greenlet switch."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, CursorResult
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


@dataclass(frozen=True)
class _Prepared:
    sql: str
    names: tuple[str, ...] | None  # the binds in positional order; None for a named paramstyle
    constants: Mapping[str, Any]  # binds the statement carries itself (a CASE's 0 or ''), by name


_COMPILED: dict[tuple[str, str, Hashable], _Prepared] = {}


def _prepared(connection: Connection, key: Hashable, build: Callable[[], ClauseElement], literal: bool) -> _Prepared:
    dialect = connection.dialect
    cache_key = (dialect.name, dialect.driver, key)
    found = _COMPILED.get(cache_key)
    if found is None:
        kwargs = {"literal_binds": True} if literal else {}
        compiled = cast(SQLCompiler, build().compile(dialect=dialect, compile_kwargs=kwargs))
        if compiled.escaped_bind_names:
            raise ValueError(f"prepared statement {key!r}: a bind name needs escaping")
        constants = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        names = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None
        found = _COMPILED[cache_key] = _Prepared(compiled.string, names, constants)
    return found


def run(
    connection: Connection,
    key: Hashable,
    build: Callable[[], ClauseElement],
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    literal: bool = False,
) -> CursorResult[Any]:
    """Run the statement `build()` makes (built and compiled once per dialect and `key`) with these values (one
    mapping, or several for an executemany). `literal`: a statement without values, its constants rendered in
    its SQL. `build` must give the same statement every time for the same key."""
    prepared = _prepared(connection, key, build, literal)
    single = params is None or isinstance(params, Mapping)
    rows: list[Mapping[str, Any]] = [params or {}] if isinstance(params, Mapping) or params is None else list(params)
    if prepared.names is None:
        values: list[Any] = [{**prepared.constants, **row} for row in rows]
    else:
        names, constants = prepared.names, prepared.constants
        values = [tuple(row[n] if n in row else constants[n] for n in names) for row in rows]
    if single:
        return connection.exec_driver_sql(prepared.sql, values[0])
    return connection.exec_driver_sql(prepared.sql, values)


def fetch(
    connection: Connection, key: Hashable, build: Callable[[], ClauseElement], *, literal: bool = False
) -> list[Any]:
    """The rows of a prepared query without values (see `run`), as the driver gives them."""
    return list(run(connection, key, build, literal=literal).all())
