"""Driver-level SQL, one mechanism for every store: a statement compiled once per dialect, its values handed to the
driver as plain tuples (or dicts, for a named paramstyle), each converted by its column type's bind processor.

Why: on the hot paths (a routing poll's dozen small questions, a batch's executemanys, the outbox insert) SQLAlchemy's
per-statement work (building the statement and its cache key, a parameter dict per row, the ORM's execution and
result set-up) cost several times the database's answer. Stores declare their statements beside their tables in
SQLAlchemy Core (`Statement`, `Many`, `insert_many` for a table's rows); SQL is written by hand only where Core
cannot say it, and then runs through `sqlprep_session.sqlite_rows` (the inline SQLite driver; None elsewhere, where
the store runs its Core statement). On the inline SQLite dialect (common.db) the values go straight to sqlite3, no
SQLAlchemy execution at all; on any other dialect through `Connection.exec_driver_sql`. Errors are SQLAlchemy's
DBAPIError either way, with the parameters hidden (personal data).

The functions taking a `Connection` run inside `session.run_sync` (common.sqlprep_session.in_one_hop): several
statements for one greenlet switch. What the driver returns is returned as is: no result processing (a time read on
SQLite is text).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Connection, DateTime, Dialect, Table, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

INLINE_SQLITE = "handoff"  # common.db.InlineSQLiteDialect.driver: statements run on the event loop's thread

Build = ClauseElement | Callable[[Dialect], ClauseElement]
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


def is_inline_sqlite(dialect: Dialect) -> bool:
    """Whether this is common.db's inline SQLite dialect (sqlite3 called directly, on the loop's thread)."""
    return dialect.driver == INLINE_SQLITE


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement compiled for one dialect: its SQL, what each row's values become and in which order."""

    sql: str
    names: tuple[str, ...] | None  # the binds in positional order; None for a named paramstyle
    constants: tuple[tuple[int | str, Any], ...]  # binds the statement carries itself: position (or name), value
    processors: tuple[tuple[int | str, Callable[[Any], Any], bool], ...]  # position (or name), processor, memo
    getter: Callable[[Mapping[str, Any]], Any] | None  # a row's given values in order (positional), or None

    def params(self, row: Mapping[str, Any]) -> Any:
        """One row's values as the driver takes them (a tuple, or a dict for a named paramstyle)."""
        if self.getter is not None and not self.constants and not self.processors:
            return self.getter(row)
        return self.rows([row])[0]

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Each row's values as the driver takes them; a processed time is converted once per distinct value."""
        if self.names is None:
            return [_named(self, row) for row in rows]
        getter = self.getter
        assert getter is not None
        if not self.constants and not self.processors:
            return [getter(row) for row in rows]
        if len(rows) == 1:  # nothing to remember across rows
            values = list(getter(rows[0]))
            for position, value in self.constants:
                values.insert(cast(int, position), value)
            for position, process, _memo in self.processors:
                values[cast(int, position)] = process(values[cast(int, position)])
            return [tuple(values)]
        return _processed(getter, self.constants, self.processors, rows)

    def tuples(self, picked: Sequence[Sequence[Any]]) -> list[Any]:
        """Rows already in the statement's bind order (tuples), processed as `rows` does."""
        if not self.processors:
            return list(picked)
        return _processed(tuple, (), self.processors, picked)


def _named(compiled: Compiled, row: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {str(name): value for name, value in compiled.constants}
    values.update(row)
    for name, process, _memo in compiled.processors:
        values[str(name)] = process(values[str(name)])
    return values


def _processed(
    getter: Callable[[Any], Any],
    constants: Sequence[tuple[Any, Any]],
    processors: Sequence[tuple[Any, Callable[[Any], Any], bool]],
    rows: Sequence[Any],
) -> list[Any]:
    """Each row's values (`getter(row)`), the constants inserted at their positions, each processed value converted
    (a memo'd one, a time, once per distinct value): the per-row loop of every executemany, kept flat."""
    memos: list[dict[Any, Any] | None] = [({} if memo else None) for _, _, memo in processors]
    plan = [(position, process, memos[index]) for index, (position, process, _) in enumerate(processors)]
    out = []
    for row in rows:
        values = list(getter(row))
        for position, constant in constants:
            values.insert(position, constant)
        for position, process, seen in plan:
            value = values[position]
            if value is None or seen is None:
                values[position] = process(value)
                continue
            done = seen.get(value)
            if done is None:
                done = seen[value] = process(value)
            values[position] = done
        out.append(tuple(values))
    return out


def compile_for(
    dialect: Dialect, statement: ClauseElement, *, literal: bool = False, postcompile: bool = False
) -> Compiled:
    """`statement` compiled for `dialect` (uncached: callers keep the result, see `Statement`). `literal`: its
    constants rendered in its SQL (no values at all); `postcompile`: expanding IN lists rendered (one bind each)."""
    kwargs: dict[str, Any] = {}
    if literal:
        kwargs["literal_binds"] = True
    if postcompile:
        kwargs["render_postcompile"] = True
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect, compile_kwargs=kwargs))
    return _from_compiled(compiled, given=None)


def _from_compiled(compiled: SQLCompiler, given: Sequence[str] | None) -> Compiled:
    """The statement's values plan. `given`: the names rows carry (None: every required bind); a bind not given
    is a constant (the statement's own value, or a column's scalar default)."""
    if compiled.escaped_bind_names:
        raise ValueError(f"a bind name needs escaping in {compiled.string!r}")
    processors: list[tuple[int | str, Callable[[Any], Any], bool]] = []
    constants: list[tuple[int | str, Any]] = []
    names = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None
    order: Sequence[str] = names if names is not None else _bind_names(compiled)
    row_names: list[str] = []
    for position, name in enumerate(order):
        slot: int | str = position if names is not None else name
        process: Any = compiled._bind_processors.get(name)
        if process is not None and not callable(process):
            raise ValueError(f"bind {name!r}: per-element processors (a tuple type) are not supported")
        bind = compiled.binds[name]
        wanted = name in given if given is not None else bind.required
        if not wanted:
            value = bind.effective_value
            constants.append((slot, process(value) if process is not None else value))
            continue
        row_names.append(name)
        if process is not None:
            kind = bind.type
            processors.append((slot, process, isinstance(getattr(kind, "impl", kind), DateTime)))
    getter: Callable[[Mapping[str, Any]], Any] | None = None
    if names is not None:
        if len(row_names) == 1:
            single = row_names[0]
            getter = lambda row: (row[single],)  # noqa: E731
        elif row_names:
            getter = itemgetter(*row_names)
        else:
            getter = lambda row: ()  # noqa: E731
    return Compiled(compiled.string, names, tuple(constants), tuple(processors), getter)


def _bind_names(compiled: SQLCompiler) -> list[str]:
    """A named paramstyle's binds, by the names the SQL uses."""
    return list(dict.fromkeys(compiled.bind_names.values()))


class Statement:
    """A statement declared once (beside its tables), compiled once per dialect on first use. `build`: the Core
    statement, or a function of the dialect making it (an upsert's dialect-specific insert)."""

    __slots__ = ("_build", "_compiled", "_literal", "_postcompile")

    def __init__(self, build: Build, *, literal: bool = False, postcompile: bool = False) -> None:
        self._build = build
        self._literal = literal
        self._postcompile = postcompile
        self._compiled: dict[tuple[str, str], Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        found = self._compiled.get((dialect.name, dialect.driver))
        if found is None:
            statement = self._build if isinstance(self._build, ClauseElement) else self._build(dialect)
            found = compile_for(dialect, statement, literal=self._literal, postcompile=self._postcompile)
            self._compiled[(dialect.name, dialect.driver)] = found
        return found

    def run(self, connection: Connection, params: Params = None) -> int:
        """Run it with these values (one mapping, or several: one executemany); the rows it touched (-1 for an
        executemany the driver does not count: asyncpg)."""
        compiled = self.compiled(connection.dialect)
        if params is None or isinstance(params, Mapping):
            return cast(int, execute(connection, compiled.sql, compiled.params(params or {})))
        if not params:
            return 0
        return cast(int, execute(connection, compiled.sql, compiled.rows(params), many=True))

    def fetch(self, connection: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Its rows for these values, as the driver gives them."""
        compiled = self.compiled(connection.dialect)
        return cast(list[Any], execute(connection, compiled.sql, compiled.params(params or {}), fetch=True))


_KEYED: dict[tuple[str, str, Hashable], Compiled] = {}


def keyed(dialect: Dialect, key: Hashable, build: Callable[[], ClauseElement], *, literal: bool = False) -> Compiled:
    """The statement `build()` makes, compiled once per dialect and `key`: for statements whose shape varies with a
    few values (a tuple of statuses in the key) or whose building depends on the caller's dialect. `build` must give
    the same statement for the same key and dialect."""
    cache_key = (dialect.name, dialect.driver, key)
    found = _KEYED.get(cache_key)
    if found is None:
        found = _KEYED[cache_key] = compile_for(dialect, build(), literal=literal)
    return found


def run(
    connection: Connection,
    key: Hashable,
    build: Callable[[], ClauseElement],
    params: Params = None,
    *,
    literal: bool = False,
) -> int:
    """Run the statement `build()` makes (see `keyed`) with these values (one mapping, or several: one
    executemany); the rows it touched (-1 for an executemany the driver does not count: asyncpg)."""
    compiled = keyed(connection.dialect, key, build, literal=literal)
    if params is None or isinstance(params, Mapping):
        return cast(int, execute(connection, compiled.sql, compiled.params(params or {})))
    if not params:
        return 0
    return cast(int, execute(connection, compiled.sql, compiled.rows(params), many=True))


def fetch(
    connection: Connection, key: Hashable, build: Callable[[], ClauseElement], *, literal: bool = False
) -> list[Any]:
    """The rows of the query `build()` makes (see `keyed`), without values, as the driver gives them."""
    compiled = keyed(connection.dialect, key, build, literal=literal)
    return cast(list[Any], execute(connection, compiled.sql, compiled.params({}), fetch=True))


class Many:
    """Executemanys of several statements fed by one list of tuple rows (each row's values in `names` order; each
    statement takes the ones it binds, by name): a batch of settled deliveries updates one table and inserts into
    another from the same rows, with no parameter dict per row. A value's bind processing (a time's text on
    SQLite) runs once per row whichever statements take it, once per distinct time."""

    __slots__ = ("_names", "_plans", "_statements")

    def __init__(self, names: Sequence[str], *statements: ClauseElement) -> None:
        self._names = tuple(names)
        self._statements = statements
        self._plans: dict[tuple[str, str], _ManyPlan] = {}

    def _for(self, dialect: Dialect) -> _ManyPlan:
        found = self._plans.get((dialect.name, dialect.driver))
        if found is None:
            processors: dict[int, tuple[int | str, Callable[[Any], Any], bool]] = {}
            statements: list[tuple[str, Callable[[Sequence[Any]], Any]]] = []
            for statement in self._statements:
                compiled = compile_for(dialect, statement)
                if compiled.names is None or compiled.constants:
                    raise ValueError("Many needs a positional paramstyle and every bind a row's value")
                indexes = [self._names.index(name) for name in compiled.names]
                for position, process, memo in compiled.processors:
                    index = indexes[cast(int, position)]
                    processors.setdefault(index, (index, process, memo))
                pick = itemgetter(*indexes) if len(indexes) > 1 else (lambda row, i=indexes[0]: (row[i],))
                statements.append((compiled.sql, pick))
            found = self._plans[(dialect.name, dialect.driver)] = (tuple(sorted(processors.values())), statements)
        return found

    def run(self, connection: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Each statement, one executemany of these rows."""
        if not rows:
            return
        processors, statements = self._for(connection.dialect)
        processed = _processed(tuple, (), processors, rows) if processors else rows
        for sql, pick in statements:
            execute(connection, sql, [pick(values) for values in processed], many=True)


_ManyPlan = tuple[
    tuple[tuple[int | str, Callable[[Any], Any], bool], ...], list[tuple[str, Callable[[Sequence[Any]], Any]]]
]


# -- a table's rows: one INSERT per table and column set -------------------------------------------------------

_INSERTS: dict[tuple[str, str, Table, tuple[str, ...]], Compiled | None] = {}


def insert_plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> Compiled | None:
    cache_key = (dialect.name, dialect.driver, table, keys)
    if cache_key in _INSERTS:
        return _INSERTS[cache_key]
    plan = None
    compiled = cast(SQLCompiler, insert(table).compile(dialect=dialect, column_keys=list(keys), for_executemany=True))
    names = compiled.positiontup if compiled.positional else _bind_names(compiled)
    defaults = [table.c[name].default for name in names or () if name not in keys and name in table.c]
    if set(keys) <= set(names or ()) and all(d is None or d.is_scalar for d in defaults):
        try:
            plan = _from_compiled(compiled, given=keys)
        except ValueError:
            plan = None
        if plan is not None:
            constants = tuple(
                (slot, _default(table, slot if isinstance(slot, str) else (names or [])[slot], value, compiled))
                for slot, value in plan.constants
            )
            plan = Compiled(plan.sql, plan.names, constants, plan.processors, plan.getter)
    _INSERTS[cache_key] = plan
    return plan


def _default(table: Table, name: str, value: Any, compiled: SQLCompiler) -> Any:
    """A column left out: its scalar default, as its bind processor converts it (None without a default)."""
    default = table.c[name].default if name in table.c else None
    if default is None:
        return value
    process: Any = compiled._bind_processors.get(name)
    arg = default.arg  # type: ignore[attr-defined]
    return process(arg) if process is not None else arg


def insert_many(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with the same keys into `table`, one executemany (the INSERT compiled once per table and keys, each row a
    tuple through its columns' bind processors, scalar defaults of the columns left out as constants). A column left
    out with a computed (Python) default goes through Core's executemany, which applies it."""
    if not rows:
        return
    plan = insert_plan(connection.dialect, table, tuple(rows[0]))
    if plan is None:
        connection.execute(insert(table), list(rows))
        return
    execute(connection, plan.sql, plan.rows(rows), many=True)


# -- execution at the driver ------------------------------------------------------------------------------------


def execute(connection: Connection, sql: str, params: Any, *, many: bool = False, fetch: bool = False) -> Any:
    """Driver SQL on the connection: the rows when `fetch`, else the rows touched. On the inline SQLite dialect
    straight to sqlite3; elsewhere through exec_driver_sql."""
    dialect = connection.dialect
    if dialect.driver == INLINE_SQLITE:
        return run_sqlite(connection.connection.driver_connection, dialect, sql, params, many, fetch)
    result = connection.exec_driver_sql(sql, params)
    return result.all() if fetch else result.rowcount


def run_sqlite(raw: Any, dialect: Dialect, sql: str, params: Any, many: bool, fetch: bool) -> Any:
    try:
        cursor = raw.executemany(sql, params) if many else raw.execute(sql, params)
        return cursor.fetchall() if fetch else cursor.rowcount
    except sqlite3.Error as exc:
        raise DBAPIError.instance(
            sql, None, exc, sqlite3.Error, hide_parameters=True, dialect=dialect, ismulti=many
        ) from exc


def sqlite_driver(connection: Connection) -> Any:
    """The sqlite3 connection under `connection` on the inline SQLite dialect (else None): for a statement run
    row by row on one cursor (an INSERT ... RETURNING per row, which executemany cannot return)."""
    if connection.dialect.driver != INLINE_SQLITE:
        return None
    return connection.connection.driver_connection


def wrap_sqlite_error(exc: sqlite3.Error, sql: str, dialect: Dialect, *, many: bool = False) -> DBAPIError:
    """A sqlite3 error as SQLAlchemy raises it (parameters hidden), for code driving sqlite3's cursor itself."""
    error = DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True, dialect=dialect, ismulti=many)
    return cast(DBAPIError, error)
