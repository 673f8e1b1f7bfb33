"""Database errors described for logs and dead-letter headers without the values they quote."""

from __future__ import annotations

import re

from sqlalchemy.exc import StatementError

# A quoted word after one of these names a schema object (constraint, column), not a value: it may stay.
_IDENTIFIER_WORDS = frozenset({"constraint", "relation", "column", "table", "index", "sequence", "schema", "type"})
_QUOTED = re.compile(r"""(?:(\w+)\s+)?(["'])(.*?)\2""")
# PostgreSQL's DETAIL names the values of a key: "Key (email)=(someone@example.com) already exists."
_KEY_VALUES = re.compile(r"\)=\(.*?\)(?=\s|$|\.)")
_DB_MODULES = ("sqlalchemy", "sqlite3", "asyncpg", "psycopg", "aiosqlite")


def _without_values(message: str) -> str:
    first_line = message.strip().splitlines()[0] if message.strip() else ""

    def quoted(match: re.Match[str]) -> str:
        word, quote, text = match.group(1), match.group(2), match.group(3)
        if word and word.lower() in _IDENTIFIER_WORDS and re.fullmatch(r"[\w.$]{1,63}", text):
            return match.group(0)
        return f"{word + ' ' if word else ''}{quote}[value]{quote}"

    return _KEY_VALUES.sub(")=([value])", _QUOTED.sub(quoted, first_line))[:300]


def is_db_error(exc: BaseException) -> bool:
    """An exception raised by SQLAlchemy or a database driver (their messages may quote the values they refused)."""
    return type(exc).__module__.split(".")[0] in _DB_MODULES


def describe_db_error(exc: BaseException) -> str:
    """A database error as text safe for a log line or a dead-letter header: the exception types, the driver's
    first line with quoted values taken out, and the statement (SQL text only; parameters are never shown)."""
    if isinstance(exc, StatementError):
        orig = exc.orig
        text = f"{type(exc).__name__}: "
        if orig is not None:
            text += f"({type(orig).__module__}.{type(orig).__name__}) {_without_values(str(orig))}"
        if exc.statement:
            text += f" [SQL: {' '.join(exc.statement.split())[:200]}]"
        return text
    return f"{type(exc).__name__}: {_without_values(str(exc))}"
